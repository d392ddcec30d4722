package storetest

import (
	"testing"

	"github.com/keyward/keyward/store"
)

// runAudit tests the store's part in the tamper-evident audit log (checkpoints).
func runAudit(t *testing.T, open func(t *testing.T) store.Store) {
	_ = open
}
