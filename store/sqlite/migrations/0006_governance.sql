-- 0006: governance: approval requests (four eyes) and MFA enrollments.

-- grants is a JSON array of {by, by_name, at, comment}; at in nanoseconds.
CREATE TABLE approvals (
	id                TEXT PRIMARY KEY,
	action            TEXT NOT NULL,
	target_type       TEXT NOT NULL,
	target_id         TEXT NOT NULL,
	product_id        TEXT,
	reason            TEXT NOT NULL,
	requested_by      TEXT NOT NULL,
	requested_by_name TEXT NOT NULL,
	required          INTEGER NOT NULL,
	policy_version    INTEGER NOT NULL,
	state             TEXT NOT NULL
		CONSTRAINT approvals_state CHECK (state IN ('pending', 'granted', 'denied', 'cancelled', 'expired')),
	grants            TEXT NOT NULL CHECK (json_valid(grants)),
	created_at        INTEGER NOT NULL,
	expires_at        INTEGER NOT NULL,
	updated_at        INTEGER NOT NULL,
	decided_at        INTEGER,
	decided_by        TEXT NOT NULL,
	decided_by_name   TEXT NOT NULL,
	decision_reason   TEXT NOT NULL
) STRICT;

-- At most one pending request per action and target.
CREATE UNIQUE INDEX approvals_one_pending ON approvals (action, target_id) WHERE state = 'pending';
CREATE INDEX approvals_target ON approvals (target_id, id);
CREATE INDEX approvals_state ON approvals (state, id);

-- sealed is the TOTP secret sealed under the KEK (additional data
-- "mfa:" || principal); last_step makes codes one-time.
CREATE TABLE mfa_enrollments (
	principal    TEXT PRIMARY KEY,
	name         TEXT NOT NULL,
	sealed       BLOB NOT NULL,
	created_at   INTEGER NOT NULL,
	last_step    INTEGER NOT NULL,
	failures     INTEGER NOT NULL,
	locked_until INTEGER
) STRICT;
