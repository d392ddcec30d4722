-- 0003: the tamper-evident audit log (docs/audit.md).
--
-- audit gains the fields the canonical entry encoding covers: the acting
-- principal's roles, the approvals behind the change, and the policy version
-- and rule that decided it. Rows written before this migration get the empty
-- values, which is what they meant.
ALTER TABLE audit ADD COLUMN roles TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(roles));
ALTER TABLE audit ADD COLUMN approval_ids TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(approval_ids));
ALTER TABLE audit ADD COLUMN policy_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit ADD COLUMN rule TEXT NOT NULL DEFAULT '';

-- The RFC 6962 Merkle tree over the audit entries, as golang.org/x/mod/sumdb/tlog
-- stores it: hash number idx (tlog.StoredHashIndex) is written in the same
-- transaction as the entry that completes it, so proofs need no recomputation.
CREATE TABLE audit_hashes (
	idx  INTEGER PRIMARY KEY,
	hash BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;

-- Signed checkpoints (C2SP tlog-checkpoint notes), one per tree size; the
-- row with the largest size is the latest. Kept for good: a client holding
-- an old checkpoint can always get a consistency proof from it.
CREATE TABLE audit_checkpoints (
	size      INTEGER PRIMARY KEY CHECK (size >= 0),
	root      BLOB NOT NULL CHECK (length(root) = 32),
	kid       TEXT NOT NULL,
	signed_at INTEGER NOT NULL,
	note      TEXT NOT NULL
) STRICT;
