package store

// RevocationTx is the part of Tx for the revocation registry and webhooks.
type RevocationTx interface{}
