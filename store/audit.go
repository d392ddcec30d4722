package store

// AuditTx is the part of Tx for the tamper-evident audit log (checkpoints).
type AuditTx interface{}
