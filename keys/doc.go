// Package keys holds Keyward's key material: signature keys, their RFC 7638
// key IDs and JWK/JWKS encodings, JWS compact signing and verification, and
// the key-encryption key (KEK) that seals private keys at rest.
//
// What it guarantees:
//
//   - Two algorithms only, Ed25519 (JWS "EdDSA", RFC 8037) and ES256 (ECDSA
//     P-256 with SHA-256, RFC 7518). Nothing else is generated, parsed or
//     verified; in particular the JWS alg "none" is always rejected.
//   - A key's ID (kid) is its RFC 7638 JWK thumbprint: base64url, without
//     padding, of the SHA-256 of the required JWK members in lexicographic
//     order. The kid is derived from the key, never chosen, so a JWK whose
//     kid does not match its key is rejected.
//   - ParseJWS is strict: exactly three non-empty unpadded base64url parts,
//     a JSON-object header without duplicate members, a known alg, no
//     "crit", a 64-byte signature and at most MaxJWSSize bytes. A token that
//     parses re-encodes to the same string, so a verified token has exactly
//     one accepted spelling. Every failure is a *VerificationError.
//   - Private keys and KEKs never print: their String, Format and LogValue
//     methods write only the algorithm and public ID, and the secret is held
//     in a closure, which reflection-based printing (of an enclosing struct,
//     or after a bad fmt verb) shows as an address, never as key bytes.
//     Neither type is comparable with ==.
//   - Sealed blobs are AES-256-GCM with a random nonce; the caller's
//     additional data (Keyward uses the kid) binds a blob to its owner.
//
// What it does not do:
//
//   - It does not decide which key may sign what, nor track key states; the
//     keyward_state, keyward_product and keyward_purpose JWK members are
//     labels set and read by the caller, never checked here.
//   - JWS verification checks the signature, not the claims: expiry, audience
//     and the kid-to-key choice are the caller's.
//   - It does not lock or guard memory. Zero wipes what this package can
//     reach, but the Go runtime may have copied secrets, and crypto/ecdsa
//     keeps its own copy of a P-256 scalar that cannot be wiped.
//   - Ed25519 public keys are not checked for small-order or non-canonical
//     points; verification against such a key simply fails.
package keys
