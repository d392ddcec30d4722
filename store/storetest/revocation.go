package storetest

import (
	"testing"

	"github.com/keyward/keyward/store"
)

// runRevocation tests the store's part in the revocation registry and webhooks.
func runRevocation(t *testing.T, open func(t *testing.T) store.Store) {
	_ = open
}
