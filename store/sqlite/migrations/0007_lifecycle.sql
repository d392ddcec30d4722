-- 0007: lifecycle automation (docs/lifecycle.md).

-- Every scheduled or manual lifecycle step that ran, by its deterministic
-- key, written in the same transaction as the step's effect: a committed
-- step never runs twice (the primary key refuses a second one), a step
-- rolled back leaves no row and runs again.
CREATE TABLE lifecycle_steps (
	key     TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 200),
	kind    TEXT NOT NULL,
	target  TEXT NOT NULL,
	done_at INTEGER NOT NULL
) STRICT;

CREATE INDEX lifecycle_steps_kind ON lifecycle_steps (kind, target, done_at);

-- The current license certificate of each license: the last one checked
-- out or re-signed. kid says which key its validity depends on.
CREATE TABLE license_certificates (
	license_id TEXT PRIMARY KEY REFERENCES licenses (id),
	product_id TEXT NOT NULL,
	kid        TEXT NOT NULL,
	jti        TEXT NOT NULL,
	issued_at  INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	token      TEXT NOT NULL
) STRICT;

CREATE INDEX license_certificates_kid ON license_certificates (kid, license_id);

-- Bulk re-sign jobs, one per key that stopped signing; cursor is the last
-- license id handled, committed with each batch.
CREATE TABLE resign_jobs (
	kid         TEXT PRIMARY KEY,
	product_id  TEXT NOT NULL,
	reason      TEXT NOT NULL,
	state       TEXT NOT NULL
		CONSTRAINT resign_jobs_state CHECK (state IN ('running', 'done', 'cancelled')),
	runs        INTEGER NOT NULL,
	total       INTEGER NOT NULL,
	done        INTEGER NOT NULL,
	skipped     INTEGER NOT NULL,
	cursor      TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL,
	finished_at INTEGER
) STRICT;

-- Named cursors of the scheduler's bounded sweeps over licenses.
CREATE TABLE lifecycle_cursors (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
) STRICT;

-- The expiry sweep reads active licenses by expiry.
CREATE INDEX licenses_expiry ON licenses (expires_at) WHERE state = 'active' AND expires_at IS NOT NULL;
