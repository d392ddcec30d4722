-- 0008: abuse signals and the bookkeeping of automatic suspensions
-- (docs/abuse.md). Both tables are append-only. Neither holds a client
-- address: usage counters (validations, fingerprints, networks) live in
-- the server's memory only.

CREATE TABLE signals (
	id         TEXT PRIMARY KEY,
	license_id TEXT NOT NULL REFERENCES licenses (id),
	product_id TEXT NOT NULL REFERENCES products (id),
	kind       TEXT NOT NULL
		CONSTRAINT signals_kind CHECK (kind IN ('abuse', 'leak', 'chargeback', 'other')),
	detail     TEXT NOT NULL,
	actor      TEXT NOT NULL,
	actor_name TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	outcome    TEXT NOT NULL
		CONSTRAINT signals_outcome CHECK (outcome IN ('recorded', 'suspended', 'inactive', 'cooldown', 'ceiling'))
) STRICT;

CREATE INDEX signals_license ON signals (license_id, created_at, id);
CREATE INDEX signals_product ON signals (product_id, created_at, id);

-- One row per automatic suspension decision: outcome 'suspended' (the
-- cooldown and the per-product ceiling count these) or 'ceiling' (an
-- alert raised instead of a suspension).
CREATE TABLE auto_suspensions (
	id             TEXT PRIMARY KEY,
	license_id     TEXT NOT NULL REFERENCES licenses (id),
	product_id     TEXT NOT NULL REFERENCES products (id),
	rule           TEXT NOT NULL,
	policy_version INTEGER NOT NULL,
	outcome        TEXT NOT NULL
		CONSTRAINT auto_suspensions_outcome CHECK (outcome IN ('suspended', 'ceiling')),
	at             INTEGER NOT NULL
) STRICT;

CREATE INDEX auto_suspensions_product ON auto_suspensions (product_id, at);
CREATE INDEX auto_suspensions_license ON auto_suspensions (license_id, at);
