-- 0005: webhook endpoints, their delivery log and the dispatcher's outbox cursor.

-- secret and previous_secret are KEK-sealed (the HMAC key must be usable, so
-- it cannot be hashed); both are NULL once the endpoint is removed.
CREATE TABLE webhook_endpoints (
	id                  TEXT PRIMARY KEY,
	url                 TEXT NOT NULL,
	events              TEXT NOT NULL CHECK (json_valid(events)),
	description         TEXT NOT NULL,
	state               TEXT NOT NULL
		CONSTRAINT webhook_endpoints_state CHECK (state IN ('enabled', 'disabled', 'removed')),
	secret              BLOB,
	previous_secret     BLOB,
	previous_expires_at INTEGER,
	start_seq           INTEGER NOT NULL,
	created_at          INTEGER NOT NULL,
	updated_at          INTEGER NOT NULL
) STRICT;

-- One row per (endpoint, event): the delivery log. payload is the exact body
-- sent and signed on every attempt.
CREATE TABLE webhook_deliveries (
	id              TEXT PRIMARY KEY,
	endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id),
	event_id        TEXT NOT NULL,
	event_seq       INTEGER NOT NULL,
	event_type      TEXT NOT NULL,
	payload         BLOB NOT NULL,
	state           TEXT NOT NULL
		CONSTRAINT webhook_deliveries_state CHECK (state IN ('pending', 'succeeded', 'failed', 'cancelled')),
	attempts        INTEGER NOT NULL,
	next_attempt_at INTEGER,
	last_attempt_at INTEGER,
	last_status     INTEGER NOT NULL,
	last_error      TEXT NOT NULL,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	UNIQUE (endpoint_id, event_id)
) STRICT;

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, id);

-- The dispatcher's cursor: the seq of the last outbox event fanned out.
CREATE TABLE webhook_cursor (
	name TEXT PRIMARY KEY,
	seq  INTEGER NOT NULL
) STRICT;
