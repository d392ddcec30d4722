package keyward

import "time"

// KeyState is a signing key's place in its life (spec 2.1, after NIST SP 800-57).
type KeyState string

const (
	KeyPending     KeyState = "pending"     // published, signs nothing yet
	KeyActive      KeyState = "active"      // the one key of its ring that signs
	KeyRetired     KeyState = "retired"     // verify-only
	KeyDestroyed   KeyState = "destroyed"   // private material erased; no longer published
	KeyCompromised KeyState = "compromised" // every signature invalid from the revocation time
)

// Purpose separates what a key may sign (role separation, as in TUF).
type Purpose string

const (
	PurposeLicense  Purpose = "license"  // license certificates and lease tokens, one ring per product
	PurposeRegistry Purpose = "registry" // revocation snapshots and audit checkpoints, one ring per server
)

// RegistryRing is the ring name of the server's registry keys.
const RegistryRing = "registry"

// LicenseRing returns the ring name of a product's license keys.
func LicenseRing(productID string) string { return "license:" + productID }

// KeyAction names a signing-key transition.
type KeyAction string

const (
	KeyActivate   KeyAction = "activate"
	KeyRetire     KeyAction = "retire"
	KeyDestroy    KeyAction = "destroy"
	KeyCompromise KeyAction = "revoke"
	// KeyRollback re-activates a retired key: the rollback of a rotation
	// that broke a client, within the overlap window (docs/lifecycle.md).
	KeyRollback KeyAction = "rollback"
)

// keyTransitions is the one table of legal signing-key transitions.
var keyTransitions = map[KeyAction]map[KeyState]KeyState{
	KeyActivate:   {KeyPending: KeyActive},
	KeyRetire:     {KeyActive: KeyRetired},
	KeyDestroy:    {KeyRetired: KeyDestroyed, KeyPending: KeyDestroyed},
	KeyCompromise: {KeyPending: KeyCompromised, KeyActive: KeyCompromised, KeyRetired: KeyCompromised},
	KeyRollback:   {KeyRetired: KeyActive},
}

// KeyTransition returns the state a key in state from reaches by action, or
// an EIllegalTransition error.
func KeyTransition(from KeyState, action KeyAction) (KeyState, error) {
	if to, ok := keyTransitions[action][from]; ok {
		return to, nil
	}
	return "", Errorf(EIllegalTransition, "cannot %s a %s key", action, from)
}

// KeyStates lists every key state; KeyActions every key action.
func KeyStates() []KeyState {
	return []KeyState{KeyPending, KeyActive, KeyRetired, KeyDestroyed, KeyCompromised}
}
func KeyActions() []KeyAction {
	return []KeyAction{KeyActivate, KeyRetire, KeyDestroy, KeyCompromise, KeyRollback}
}

// Published reports whether a key in this state belongs in the JWKS.
func (s KeyState) Published() bool {
	return s == KeyPending || s == KeyActive || s == KeyRetired
}

// SigningKey is an asymmetric key pair of a ring. Sealed holds the private
// key encrypted under the KEK (additional data: the kid); it is nil once the
// key is destroyed.
type SigningKey struct {
	KID           string // RFC 7638 thumbprint
	Ring          string
	Purpose       Purpose
	ProductID     string // "" for the registry ring
	Algorithm     string // "Ed25519" or "ES256"
	State         KeyState
	PublicKey     []byte // PKIX DER
	Sealed        []byte // KEK-sealed PKCS#8; never leaves the server
	CreatedAt     time.Time
	ActivatedAt   *time.Time
	RetiredAt     *time.Time
	DestroyedAt   *time.Time
	CompromisedAt *time.Time
	Reason        string // reason of the last transition, if given
}
