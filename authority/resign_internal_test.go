package authority

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
)

// resignTx is a store.Tx with the two methods resignPipeline uses: its
// candidates are sorted by license id, and it records what is written.
type resignTx struct {
	store.Tx
	cands    []*store.ResignCandidate
	written  []*store.Certificate
	writeErr error
}

func (x *resignTx) ResignCandidates(kid string, now time.Time, after string, limit int) ([]*store.ResignCandidate, error) {
	i, _ := slices.BinarySearchFunc(x.cands, after, func(c *store.ResignCandidate, id string) int { return strings.Compare(c.LicenseID, id) })
	for i < len(x.cands) && x.cands[i].LicenseID <= after {
		i++
	}
	return x.cands[i:min(i+limit, len(x.cands))], nil
}

func (x *resignTx) ResignCertificates(cs []*store.Certificate) error {
	if x.writeErr != nil {
		return x.writeErr
	}
	x.written = append(x.written, cs...)
	return nil
}

// failingSigner fails to sign the signing input that holds bad.
type failingSigner struct {
	keys.Signer
	bad string
}

func (s failingSigner) Sign(in []byte) ([]byte, error) {
	if strings.Contains(string(in), s.bad) {
		return nil, errors.New("sign failed")
	}
	return s.Signer.Sign(in)
}

// TestResignPipeline: the pipeline re-signs the eligible candidates, and
// only those, under the new key with their payload kept, writes them in
// license order, reports what it read once, and stops at the first error.
func TestResignPipeline(t *testing.T) {
	oldKey, err := keys.Generate(keys.Ed25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	newKey, err := keys.Generate(keys.Ed25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	newTx := func(n int) *resignTx {
		x := &resignTx{}
		for i := range n {
			id := fmt.Sprintf("lic_%04d", i)
			tok, err := keys.SignJWS(oldKey, "keyward-cert+jwt", []byte(`{"sub":"`+id+`"}`))
			if err != nil {
				t.Fatal(err)
			}
			x.cands = append(x.cands, &store.ResignCandidate{
				Certificate: store.Certificate{LicenseID: id, KID: oldKey.KID(), JTI: "crt_" + id, Token: tok},
				Eligible:    i%7 != 3,
			})
		}
		return x
	}

	t.Run("OK", func(t *testing.T) {
		x := newTx(450)
		var reads []resignResult
		err := (&Authority{}).resignPipeline(x, newKey, oldKey.KID(), time.Unix(0, 0), "", 400, func(r *resignResult) error {
			reads = append(reads, *r)
			return nil
		})
		if err != nil {
			t.Fatalf("resignPipeline = %v", err)
		}
		if len(reads) != 1 || reads[0].read != 400 || reads[0].last != "lic_0399" {
			t.Fatalf("onRead calls %+v, want one after 400 read up to lic_0399", reads)
		}
		var want []string
		for _, c := range x.cands[:400] {
			if c.Eligible {
				want = append(want, c.LicenseID)
			}
		}
		if r := reads[0]; !slices.Equal(r.licenses, want) || r.skipped != 400-len(want) {
			t.Errorf("read %d licenses, %d skipped; want %d, %d", len(r.licenses), r.skipped, len(want), 400-len(want))
		}
		var got []string
		for _, c := range x.written {
			got = append(got, c.LicenseID)
			j, err := keys.VerifyJWS(c.Token, newKey.Public())
			if err != nil || c.KID != newKey.KID() || j.Header.Kid != newKey.KID() || string(j.Payload) != `{"sub":"`+c.LicenseID+`"}` {
				t.Fatalf("written %s: kid %s, %v", c.LicenseID, c.KID, err)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("written %v, want %v", got, want)
		}
	})
	t.Run("ErrSign", func(t *testing.T) {
		x := newTx(300)
		err := (&Authority{}).resignPipeline(x, failingSigner{newKey, base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"lic_0200"}`))}, oldKey.KID(), time.Unix(0, 0), "", 1000, func(*resignResult) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "lic_0200") {
			t.Fatalf("resignPipeline = %v, want the failure of lic_0200", err)
		}
		for _, c := range x.written {
			if c.LicenseID >= "lic_0200" {
				t.Fatalf("wrote %s, at or after the failed certificate", c.LicenseID)
			}
		}
	})
	t.Run("ErrWrite", func(t *testing.T) {
		x := newTx(300)
		x.writeErr = errors.New("disk full")
		err := (&Authority{}).resignPipeline(x, newKey, oldKey.KID(), time.Unix(0, 0), "", 1000, func(*resignResult) error { return nil })
		if !errors.Is(err, x.writeErr) {
			t.Fatalf("resignPipeline = %v, want %v", err, x.writeErr)
		}
	})
}
