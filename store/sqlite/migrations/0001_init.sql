-- 0001: Keyward's initial schema.
--
-- Times are INTEGER nanoseconds since the Unix epoch, UTC; NULL where the Go
-- field is a pointer. JSON columns hold arrays or documents as TEXT.

CREATE TABLE products (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE signing_keys (
	kid            TEXT PRIMARY KEY,
	ring           TEXT NOT NULL,
	purpose        TEXT NOT NULL
		CONSTRAINT signing_keys_purpose CHECK (purpose IN ('license', 'registry')),
	product_id     TEXT REFERENCES products (id),
	algorithm      TEXT NOT NULL,
	state          TEXT NOT NULL
		CONSTRAINT signing_keys_state CHECK (state IN ('pending', 'active', 'retired', 'destroyed', 'compromised')),
	public_key     BLOB NOT NULL,
	sealed         BLOB,
	created_at     INTEGER NOT NULL,
	activated_at   INTEGER,
	retired_at     INTEGER,
	destroyed_at   INTEGER,
	compromised_at INTEGER,
	reason         TEXT NOT NULL
) STRICT;

-- One active key per ring, guaranteed by the store.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (ring) WHERE state = 'active';
CREATE INDEX signing_keys_ring ON signing_keys (ring, created_at);

CREATE TABLE licenses (
	id                TEXT PRIMARY KEY,
	product_id        TEXT NOT NULL REFERENCES products (id),
	holder            TEXT NOT NULL,
	state             TEXT NOT NULL
		CONSTRAINT licenses_state CHECK (state IN ('active', 'suspended', 'revoked', 'expired', 'retired')),
	key_prefix        TEXT NOT NULL,
	entitlements      TEXT NOT NULL CHECK (json_valid(entitlements)),
	max_machines      INTEGER NOT NULL,
	expires_at        INTEGER,
	created_at        INTEGER NOT NULL,
	updated_at        INTEGER NOT NULL,
	reason            TEXT NOT NULL,
	last_validated_at INTEGER,
	issued_by         TEXT NOT NULL
) STRICT;

CREATE INDEX licenses_product ON licenses (product_id, id);
CREATE INDEX licenses_holder ON licenses (holder);

CREATE TABLE license_keys (
	hash          BLOB PRIMARY KEY,
	license_id    TEXT NOT NULL REFERENCES licenses (id),
	prefix        TEXT NOT NULL,
	created_at    INTEGER NOT NULL,
	superseded_at INTEGER,
	grace_until   INTEGER
) STRICT;

CREATE INDEX license_keys_license ON license_keys (license_id);

CREATE TABLE machines (
	id           TEXT PRIMARY KEY,
	license_id   TEXT NOT NULL REFERENCES licenses (id),
	fingerprint  TEXT NOT NULL,
	created_at   INTEGER NOT NULL,
	last_seen_at INTEGER NOT NULL,
	UNIQUE (license_id, fingerprint)
) STRICT;

-- seq is assigned by the store as max(seq)+1 inside the writing transaction,
-- so entries are numbered 1, 2, 3, … without gaps.
CREATE TABLE audit (
	seq         INTEGER PRIMARY KEY,
	time        INTEGER NOT NULL,
	actor       TEXT NOT NULL,
	actor_name  TEXT NOT NULL,
	action      TEXT NOT NULL,
	target_type TEXT NOT NULL,
	target_id   TEXT NOT NULL,
	"before"    TEXT NOT NULL,
	"after"     TEXT NOT NULL,
	reason      TEXT NOT NULL,
	request_id  TEXT NOT NULL,
	details     TEXT CHECK (details IS NULL OR json_valid(details))
) STRICT;

CREATE INDEX audit_target ON audit (target_id, seq);
CREATE INDEX audit_action ON audit (action, seq);
CREATE INDEX audit_time ON audit (time);

-- AUTOINCREMENT: an event's seq is never reused, even if delivered rows are
-- later deleted, so a consumer's "after seq" cursor stays valid.
CREATE TABLE outbox (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	id      TEXT NOT NULL UNIQUE,
	type    TEXT NOT NULL,
	time    INTEGER NOT NULL,
	subject TEXT NOT NULL,
	data    TEXT CHECK (data IS NULL OR json_valid(data))
) STRICT;

CREATE TABLE tokens (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	hash       BLOB NOT NULL UNIQUE,
	roles      TEXT NOT NULL CHECK (json_valid(roles)),
	product_id TEXT,
	created_at INTEGER NOT NULL,
	expires_at INTEGER,
	revoked_at INTEGER
) STRICT;

CREATE TABLE secrets (
	name   TEXT PRIMARY KEY,
	sealed BLOB NOT NULL
) STRICT;
