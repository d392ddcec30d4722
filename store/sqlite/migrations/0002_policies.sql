-- 0002: versioned lifecycle policies (spec section 5).
--
-- Every apply or rollback adds a row; rows are never updated or deleted. The
-- highest version of a product is the policy in force. version is assigned
-- by the store as max(version)+1 inside the writing transaction.

CREATE TABLE policies (
	product_id    TEXT NOT NULL REFERENCES products (id),
	version       INTEGER NOT NULL CHECK (version > 0),
	document      TEXT NOT NULL,
	hash          TEXT NOT NULL,
	author        TEXT NOT NULL,
	author_name   TEXT NOT NULL,
	created_at    INTEGER NOT NULL,
	justification TEXT NOT NULL,
	rollback_of   INTEGER NOT NULL DEFAULT 0 CHECK (rollback_of >= 0 AND rollback_of < version),
	PRIMARY KEY (product_id, version)
) STRICT;
