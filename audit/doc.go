// Package audit makes Keyward's audit trail tamper-evident: every audit
// entry is a leaf of an RFC 6962 Merkle tree, and the server signs
// checkpoints of that tree with its registry key in the C2SP
// tlog-checkpoint signed-note form. The tree, the proofs and the note
// format are golang.org/x/mod/sumdb/tlog and golang.org/x/mod/sumdb/note;
// this package only decides what a leaf is and when to sign.
//
// What it guarantees:
//
//   - Every entry has one canonical encoding (Encode; docs/audit.md gives it
//     byte for byte) and leaf i of the tree is the entry with seq i+1.
//     Decode accepts only canonical encodings, so a verified leaf has
//     exactly one spelling.
//   - Append writes an entry and the tree hashes it completes in the same
//     store transaction, so proofs need no recomputation and no entry is
//     ever outside the tree. Every writer of audit entries MUST use Append.
//   - SignCheckpoint never signs a checkpoint inconsistent with the latest
//     stored one (or the last one this process signed): before signing it
//     checks the stored checkpoint's signature, recomputes the leaves added
//     since from the entries, and checks an RFC 6962 consistency proof. If
//     anything disagrees it refuses with a *TamperError and signs nothing.
//   - VerifyLog, given trusted checkpoints and a source of entries and
//     proofs, recomputes the tree from the entries and, when they do not
//     match, names the first entry that cannot be proven against the
//     checkpoint.
//
// What it does not guarantee:
//
//   - Detection needs a checkpoint held outside the database. Someone who
//     can write the database can rewrite the whole trail, hashes and
//     checkpoints included, and the server will then sign the rewritten
//     tree; only a client that saved an earlier checkpoint sees the
//     rewrite. That is why `keyward audit verify --save` exists.
//   - It does not hide entries: a checkpoint proves what the log held, not
//     that every event in the world was logged.
//   - When the server's stored tree hashes were rewritten too, the entry
//     VerifyLog names may come before the one actually changed (it is the
//     first entry the server can no longer prove).
package audit
