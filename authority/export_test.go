package authority

import (
	"maps"
	"slices"
)

// OpenedKeys returns the kids of the private keys held opened in memory.
func (a *Authority) OpenedKeys() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(maps.Keys(a.signers))
}
