package storetest

import (
	"testing"

	"github.com/keyward/keyward/store"
)

// runPolicy tests the store's part in versioned lifecycle policies (issue: policy engine).
func runPolicy(t *testing.T, open func(t *testing.T) store.Store) {
	_ = open
}
