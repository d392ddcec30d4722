package authority

import (
	"maps"
	"slices"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// WithoutAuditTree makes a append its audit entries as they are, without
// normalizing them or storing their Merkle tree hashes: the baseline of
// BenchmarkTreeCost. Its log does not verify.
func (a *Authority) WithoutAuditTree() {
	a.appendAudit = func(tx store.Tx, es []*keyward.AuditEntry) error {
		if len(es) == 1 {
			return tx.AppendAudit(es[0])
		}
		return tx.AppendAudits(es)
	}
}

// OpenedKeys returns the kids of the private keys held opened in memory.
func (a *Authority) OpenedKeys() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(maps.Keys(a.signers))
}
