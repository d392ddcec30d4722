package store

// PolicyTx is the part of Tx for versioned lifecycle policies (issue: policy engine).
type PolicyTx interface{}
