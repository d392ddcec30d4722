package audit

import (
	"bytes"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
)

// SignRequest is what SignCheckpoint needs besides the transaction.
type SignRequest struct {
	Origin string      // the checkpoint's first line and the signer's note key name
	Signer keys.Signer // the active registry key, Ed25519
	Public keys.PublicKey
	Now    time.Time
	// Last is the last checkpoint this process signed, if any: the new one
	// must be consistent with it too, even if the stored history was
	// rolled back.
	Last *Checkpoint
}

// SignCheckpoint signs and stores a checkpoint of the whole log, in tx (a
// read-write transaction, so that no two signers interleave). Before
// signing it
//
//   - hashes the entries appended without Append (if no checkpoint
//     covers them),
//   - checks the latest stored checkpoint: its note verifies with the key
//     it names and matches its row, it covers no more entries than the log
//     has, and
//   - recomputes the leaf of every entry after it from the stored entry
//     and compares it with the stored tree, and
//   - checks an RFC 6962 consistency proof from it (and from req.Last) to
//     the new tree.
//
// Any disagreement is a *TamperError and nothing is signed. With nothing
// new since the latest checkpoint it returns that checkpoint and false. An
// empty log is not signed: it returns nil, false, nil.
func SignCheckpoint(tx store.Tx, req SignRequest) (*store.Checkpoint, bool, error) {
	size, err := tx.AuditSize()
	if err != nil {
		return nil, false, err
	}
	latest, err := tx.LatestCheckpoint()
	if keyward.ErrorCode(err) == keyward.ENotFound {
		latest, err = nil, nil
	}
	if err != nil {
		return nil, false, err
	}
	var from int64 // entries up to here are covered by the latest checkpoint
	var prev *Checkpoint
	if latest != nil {
		c, err := checkStored(tx, latest)
		if err != nil {
			return nil, false, err
		}
		if c.Size > size {
			return nil, false, &TamperError{Seq: size + 1, Problem: fmt.Sprintf("entry is missing, yet checkpoint %d covers it", c.Size)}
		}
		from, prev = c.Size, &c
	}

	hashed, err := TreeSize(tx)
	if err != nil {
		return nil, false, err
	}
	if hashed > size {
		return nil, false, &TamperError{Seq: size + 1, Problem: fmt.Sprintf("entry is missing, yet the tree has %d leaves", hashed)}
	}
	if hashed < from {
		return nil, false, &TamperError{Seq: hashed + 1, Problem: fmt.Sprintf("its tree hashes are missing, yet checkpoint %d covers it", from)}
	}
	if err := recheck(tx, from, hashed); err != nil {
		return nil, false, err
	}
	if err := extend(tx, hashed, size); err != nil {
		return nil, false, err
	}
	if size == 0 {
		return nil, false, nil
	}
	hr := HashReader(tx)
	root, err := tlog.TreeHash(size, hr)
	if err != nil {
		return nil, false, fmt.Errorf("audit: tree hash %d: %w", size, err)
	}
	for _, old := range []*Checkpoint{prev, req.Last} {
		if err := consistent(old, size, root, hr); err != nil {
			return nil, false, err
		}
	}
	if latest != nil && latest.Size == size {
		return latest, false, nil
	}

	s, err := NoteSigner(req.Origin, req.Signer, req.Public)
	if err != nil {
		return nil, false, err
	}
	c := Checkpoint{Origin: req.Origin, Size: size, Root: root, KID: req.Signer.KID()}
	msg, err := SignNote(c, s)
	if err != nil {
		return nil, false, err
	}
	// A signer that does not sign with the key it claims must not get a
	// checkpoint stored.
	v, err := verifier(req.Origin, req.Public)
	if err != nil {
		return nil, false, err
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		return nil, false, fmt.Errorf("audit: the registry key's signature does not verify: %w", err)
	}
	out := &store.Checkpoint{Size: size, Root: root, KID: c.KID, SignedAt: req.Now, Note: msg}
	if err := tx.AppendCheckpoint(out); err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// checkStored verifies a stored checkpoint's note with the key it names
// and that its row says the same.
func checkStored(tx store.Tx, sc *store.Checkpoint) (Checkpoint, error) {
	bad := func(problem string) error {
		return &TamperError{Problem: fmt.Sprintf("stored checkpoint %d %s", sc.Size, problem)}
	}
	text, _, ok := bytes.Cut(sc.Note, []byte("\n\n"))
	if !ok {
		return Checkpoint{}, bad("is not a signed note")
	}
	c, err := ParseCheckpoint(string(text) + "\n")
	if err != nil {
		return Checkpoint{}, bad("is malformed: " + err.Error())
	}
	if c.Size != sc.Size || c.Root != sc.Root || c.KID != sc.KID {
		return Checkpoint{}, bad("does not match its note")
	}
	k, err := tx.Key(c.KID)
	if err != nil {
		return Checkpoint{}, bad("names key " + c.KID + ", which is not in the store")
	}
	if k.Purpose != keyward.PurposeRegistry {
		return Checkpoint{}, bad("names key " + c.KID + ", which is not a registry key")
	}
	pub, err := keys.ParsePublic(k.PublicKey)
	if err != nil {
		return Checkpoint{}, err
	}
	v, err := verifier(c.Origin, pub)
	if err != nil {
		return Checkpoint{}, bad(err.Error())
	}
	if _, err := note.Open(sc.Note, note.VerifierList(v)); err != nil {
		return Checkpoint{}, bad("does not verify with key " + c.KID)
	}
	return c, nil
}

// recheck compares the stored leaf hash of every entry with from < seq <=
// to with the hash of the stored entry.
func recheck(tx store.Tx, from, to int64) error {
	hr := HashReader(tx)
	for from < to {
		es, err := tx.AuditEntries(store.AuditFilter{AfterSeq: from, Limit: int(min(to-from, 1000))})
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return &TamperError{Seq: from + 1, Problem: "entry is missing"}
		}
		idx := make([]int64, len(es))
		for i, e := range es {
			idx[i] = tlog.StoredHashIndex(0, e.Seq-1)
		}
		stored, err := hr.ReadHashes(idx)
		if err != nil {
			return &TamperError{Seq: from + 1, Problem: "its leaf hash is missing"}
		}
		for i, e := range es {
			if e.Seq != from+1 {
				return &TamperError{Seq: from + 1, Problem: "entry is missing"}
			}
			h, err := LeafHash(e)
			if err != nil || h != stored[i] {
				return &TamperError{Seq: e.Seq, Problem: "entry does not match its leaf hash"}
			}
			from++
		}
	}
	return nil
}

// consistent checks that old (if any) is a prefix of the tree of size
// with hash root, by an RFC 6962 consistency proof.
func consistent(old *Checkpoint, size int64, root tlog.Hash, hr tlog.HashReader) error {
	switch {
	case old == nil || old.Size == 0:
		return nil
	case old.Size > size:
		return &TamperError{Seq: size + 1, Problem: fmt.Sprintf("entry is missing, yet checkpoint %d covers it", old.Size)}
	}
	p, err := tlog.ProveTree(size, old.Size, hr)
	if err == nil {
		err = tlog.CheckTree(p, size, root, old.Size, old.Root)
	}
	if err != nil {
		return &TamperError{Problem: fmt.Sprintf("the tree of %d entries is not consistent with checkpoint %d: %v", size, old.Size, err)}
	}
	return nil
}
