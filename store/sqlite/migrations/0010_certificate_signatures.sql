-- 0010: the current signature of each current certificate, apart from the
-- certificate (docs/lifecycle.md section 4). A re-sign keeps the payload
-- byte for byte and changes only the JWS header (kid) and signature, so it
-- writes this narrow row and never the ~600-byte token (docs/benchmarks.md,
-- "Bulk re-sign"). license_certificates keeps the token as checked out;
-- header_b64 and signature_b64 are NULL until the certificate is
-- re-signed, then replace the token's first and last segments. kid and
-- expires_at are the certificate's current ones (expires_at never changes).
CREATE TABLE certificate_signatures (
	license_id    TEXT PRIMARY KEY REFERENCES license_certificates (license_id),
	kid           TEXT NOT NULL,
	expires_at    INTEGER NOT NULL,
	header_b64    TEXT,
	signature_b64 TEXT,
	CONSTRAINT certificate_signatures_resigned CHECK ((header_b64 IS NULL) = (signature_b64 IS NULL))
) STRICT;

INSERT INTO certificate_signatures (license_id, kid, expires_at)
	SELECT license_id, kid, expires_at FROM license_certificates;

DROP INDEX license_certificates_kid;
CREATE INDEX certificate_signatures_kid ON certificate_signatures (kid, license_id);
