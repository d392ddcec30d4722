-- 0009: governance exceptions (docs/governance.md, "Exceptions"): one
-- scheduled lifecycle step (rule) held on one target until a time, once
-- its approval request is granted. Expiry is computed from until_at: the
-- stored state is never 'expired'.
CREATE TABLE exceptions (
	id                TEXT PRIMARY KEY,
	target_type       TEXT NOT NULL
		CONSTRAINT exceptions_target_type CHECK (target_type IN ('key', 'license')),
	target_id         TEXT NOT NULL,
	product_id        TEXT,
	rule              TEXT NOT NULL CHECK (length(rule) BETWEEN 1 AND 200),
	until_at          INTEGER NOT NULL,
	justification     TEXT NOT NULL CHECK (length(justification) >= 1),
	requested_by      TEXT NOT NULL,
	requested_by_name TEXT NOT NULL,
	approval_id       TEXT NOT NULL,
	state             TEXT NOT NULL
		CONSTRAINT exceptions_state CHECK (state IN ('pending', 'active', 'denied')),
	created_at        INTEGER NOT NULL,
	updated_at        INTEGER NOT NULL,
	decided_at        INTEGER
) STRICT;

CREATE INDEX exceptions_target ON exceptions (target_id, rule, id);
CREATE INDEX exceptions_approval ON exceptions (approval_id);
CREATE INDEX exceptions_state ON exceptions (state, id);
