package keyward

import (
	"encoding/json"
	"time"
)

// AuditEntry records one state change. It is written in the same transaction
// as the change it describes, through audit.Append, which also makes it a
// leaf of the tamper-evident Merkle log (docs/audit.md gives its canonical
// encoding; every field below is part of it).
type AuditEntry struct {
	Seq        int64 // assigned by the store, from 1, without gaps
	Time       time.Time
	Actor      string   // principal id
	ActorName  string   // principal name
	Roles      []string // the principal's roles when it acted
	Action     string   // e.g. "license.revoke"
	TargetType string   // "license", "key", "product", "machine", "token", "kek"
	TargetID   string
	Before     string // state before ("" when created)
	After      string // state after
	Reason     string // reason or justification
	RequestID  string
	// ApprovalIDs are the approvals that authorized the change (governance:
	// a second principal confirming a permanent action); nil when none.
	ApprovalIDs []string
	// PolicyVersion and Rule name the policy version and rule behind a
	// decision the policy engine took (0 and "" when no policy decided).
	PolicyVersion int
	Rule          string
	Details       json.RawMessage // action-specific, never secret
}

// Event is an outbox row: a fact other systems may want, written in the same
// transaction as the change and delivered at least once.
type Event struct {
	Seq     int64 // assigned by the store, increasing
	ID      string
	Type    string // e.g. "license.revoked"
	Time    time.Time
	Subject string // id of the thing it is about
	Data    json.RawMessage
}

// Token is an API credential. Only a keyed hash of the secret is stored.
type Token struct {
	ID        string
	Name      string
	Hash      []byte
	Roles     []string
	ProductID string
	CreatedAt time.Time
	ExpiresAt *time.Time
	RevokedAt *time.Time
}
