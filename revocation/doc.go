// Package revocation builds Keyward's revocation registry documents and
// pushes registry changes to subscribers (docs/revocation.md).
//
// The registry is an append-only list of rows (keyward.Revocation), each a
// revocation-relevant change — a license revoked, suspended or reinstated,
// a signing key compromised — numbered by an increasing seq and written in
// the same transaction as the change. This package turns rows into three
// signed forms, all JWS compact serializations (RFC 7515) signed by the
// server's registry key, so a relying party trusts them however they
// travelled:
//
//   - a snapshot (typ "revocations+jwt"): every license currently revoked
//     or suspended and every compromised key of a view (one product, or the
//     whole server), as of seq;
//   - a delta (typ "revocations-delta+jwt"): the latest state of every
//     subject that changed in the view with a seq in (from_seq, to_seq],
//     reinstatements (state "active") included;
//   - a push event: a delta sent over Server-Sent Events as the change
//     commits.
//
// Guarantees:
//
//   - Seq never goes down for a view: a snapshot's seq is the seq of the
//     newest row of the view it reflects, a delta's to_seq is at least its
//     from_seq.
//   - A delta lists every view change in (from_seq, to_seq]; a client that
//     holds state at seq s with from_seq <= s may apply it and then holds
//     state at to_seq.
//   - A subscription delivers every view row after its starting point, in
//     seq order and without gaps: rows come from the registry table itself
//     (the outbox), from an in-memory window of recent rows or, for an older
//     starting point, from the store. Nothing committed is lost across a
//     restart.
//   - Every document says when it was signed (issued_at) and when the client
//     must have a newer one (next_update). Cached snapshots are re-signed
//     at half their lifetime, even when nothing changed.
//
// It does not decide what is revoked (package authority does), hold keys
// (it signs through a keys.Signer the Source hands out for each document),
// or serve HTTP (package api does). It imports no server package, so the
// sdk uses its Parse and Decode functions to read the documents.
package revocation
