-- 0004: the revocation registry (docs/revocation.md).
--
-- One row per revocation-relevant change: a license revoked, suspended or
-- reinstated, a signing key compromised. AUTOINCREMENT: a committed seq is
-- never reused, so a client's "since seq" cursor stays valid; the one
-- writer connection makes seqs increase in commit order.
-- The table is append-only and is the outbox of the revocation push
-- channel: a subscriber resumes by reading the rows after its last seq.
CREATE TABLE revocations (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	product_id TEXT NOT NULL, -- '' for a registry key, which concerns every product
	kind       TEXT NOT NULL
		CONSTRAINT revocations_kind CHECK (kind IN ('license', 'key')),
	subject    TEXT NOT NULL CHECK (subject <> ''),
	state      TEXT NOT NULL CHECK (state <> ''),
	reason     TEXT NOT NULL,
	time       INTEGER NOT NULL
) STRICT;

CREATE INDEX revocations_product ON revocations (product_id, seq);
