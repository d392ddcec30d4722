package sdk

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
)

// DefaultLeeway is the clock skew allowed on nbf and exp when
// Options.Leeway is zero.
const DefaultLeeway = 60 * time.Second

// MaxJWKSSize is the largest trust bundle, in bytes, that ParseJWKS and
// Client.JWKS accept.
const MaxJWKSSize = 1 << 20

// Key states and purposes as the JWKS labels them (keyward_state,
// keyward_purpose).
const (
	statePending     = "pending"
	stateActive      = "active"
	stateRetired     = "retired"
	stateCompromised = "compromised"
	stateDestroyed   = "destroyed"
	purposeLicense   = "license"
)

// Options configure a Verifier. The zero value verifies against the system
// clock with DefaultLeeway and does not check iss or aud.
type Options struct {
	// Now returns the current time; nil means time.Now. Inject a trusted
	// clock here, and a fixed one in tests.
	Now func() time.Time
	// Leeway is the clock skew allowed on nbf and exp: a token is accepted
	// while nbf <= now+Leeway and now-Leeway < exp. Zero means
	// DefaultLeeway (60s); a negative value means no leeway at all.
	Leeway time.Duration
	// Issuer, if non-empty, is the only iss accepted.
	Issuer string
	// Audience, if non-empty, is the only aud accepted: the product name.
	// Set it: without it a certificate for another product of the same
	// vendor verifies as long as its key is in the bundle.
	Audience string
	// Revocations, if set, is consulted after every other check: a token
	// of a license the registry lists as revoked or suspended, or signed
	// by a key it lists as compromised, is refused (ErrRevoked,
	// ErrSuspended, ErrKeyCompromised), and so is every token while the
	// cache's state is too old to answer (ErrStale: fail closed).
	Revocations *RevocationCache
}

// trustedKey is a key of the trust bundle with its labels.
type trustedKey struct {
	kid     string
	pub     keys.PublicKey
	state   string // "", pending, active or retired
	purpose string // "", "license", "registry", …
	product string // product name, "" if unlabelled
}

// signsLicenseTokens reports whether k may sign certificates and leases:
// keys labelled for another purpose (the registry ring) may not.
func (k trustedKey) signsLicenseTokens() bool {
	return k.purpose == "" || k.purpose == purposeLicense
}

// Verifier checks Keyward certificates and leases offline against a trust
// bundle. It is safe for concurrent use; MarkCompromised may run
// concurrently with verifications.
type Verifier struct {
	now         func() time.Time
	leeway      time.Duration
	issuer      string
	audience    string
	revocations *RevocationCache

	trusted  map[string]trustedKey // by kid; never changed after NewVerifier
	unusable map[string]string     // kid → why the JWKS entry was skipped
	headers  map[string]headerKey  // encoded header → key; never changed after NewVerifier

	mu          sync.RWMutex
	compromised map[string]string // kid → how we learnt it
}

// NewVerifier returns a Verifier trusting the keys of jwks.
//
// A key is trusted only if it carries a kid equal to its RFC 7638
// thumbprint and keys.PublicKeyFromJWK accepts it (Ed25519 or P-256, use
// "sig", alg fitting the key). Keys whose keyward_state is "compromised"
// or "destroyed" are not trusted: their kids are remembered as
// compromised, so tokens they signed fail with ReasonKeyCompromised. Keys
// labelled "pending", "active", "retired" or not labelled are trusted.
// Keys with any other state, without kid or that do not parse, and kids
// listed twice with different labels, are skipped: tokens naming such a
// kid fail with ReasonUnknownKey, saying why. Skipping rather than failing
// lets a bundle from a newer server, with a key type this SDK does not
// know, still work for the keys it does.
//
// NewVerifier fails if no key remains that may sign license tokens.
func NewVerifier(jwks keys.JWKS, opts Options) (*Verifier, error) {
	v := &Verifier{
		now:         opts.Now,
		leeway:      opts.Leeway,
		issuer:      opts.Issuer,
		audience:    opts.Audience,
		revocations: opts.Revocations,
		trusted:     map[string]trustedKey{},
		unusable:    map[string]string{},
		compromised: map[string]string{},
	}
	if v.now == nil {
		v.now = time.Now
	}
	switch {
	case v.leeway == 0:
		v.leeway = DefaultLeeway
	case v.leeway < 0:
		v.leeway = 0
	}
	noKid := 0
	for _, j := range jwks.Keys {
		if j.Kid == "" {
			noKid++
			continue
		}
		switch j.State {
		case stateCompromised, stateDestroyed:
			// The kid alone is what matters: refuse it even if the rest of
			// the entry does not parse.
			v.compromised[j.Kid] = "keyward_state " + j.State + " in the trust bundle"
			continue
		case "", statePending, stateActive, stateRetired:
		default:
			v.unusable[j.Kid] = fmt.Sprintf("unknown keyward_state %q", j.State)
			continue
		}
		pub, err := keys.PublicKeyFromJWK(j)
		if err != nil {
			v.unusable[j.Kid] = err.Error()
			continue
		}
		k := trustedKey{kid: j.Kid, pub: pub, state: j.State, purpose: j.Purpose, product: j.Product}
		if old, dup := v.trusted[j.Kid]; dup && (old.purpose != k.purpose || old.product != k.product) {
			v.unusable[j.Kid] = "listed twice with different keyward_purpose or keyward_product"
			continue
		}
		v.trusted[j.Kid] = k
	}
	usable := 0
	for kid, k := range v.trusted {
		if _, bad := v.unusable[kid]; bad {
			delete(v.trusted, kid)
			continue
		}
		if _, bad := v.compromised[kid]; bad {
			delete(v.trusted, kid)
			continue
		}
		if k.signsLicenseTokens() {
			usable++
		}
	}
	if usable == 0 {
		var skipped []string
		for kid, r := range v.unusable {
			skipped = append(skipped, kid+": "+r)
		}
		sort.Strings(skipped)
		if noKid > 0 {
			skipped = append(skipped, fmt.Sprintf("%d without kid", noKid))
		}
		why := ""
		if len(skipped) > 0 {
			why = fmt.Sprintf(" (skipped %s)", strings.Join(skipped, "; "))
		}
		return nil, fmt.Errorf("keyward: verifier: no usable license key in the trust bundle%s", why)
	}
	v.headers = map[string]headerKey{}
	for _, k := range v.trusted {
		if !k.signsLicenseTokens() {
			continue // the slow path says why such a token fails
		}
		for _, typ := range [...]string{keyward.TypCertificate, keyward.TypLease} {
			if h, ok := encodedHeader(k, typ); ok {
				v.headers[h] = headerKey{typ: typ, key: k}
			}
		}
	}
	return v, nil
}

// headerKey is what the fast path of verifySignature learns from a token
// whose first part is one of Verifier.headers: its typ, and the trusted
// key, allowed to sign license tokens, that it names with that key's alg.
type headerKey struct {
	typ string
	key trustedKey
}

// encodedHeader returns the first part of the tokens keys.SignJWS makes
// with k for typ: the base64url of {"alg":…,"kid":…,"typ":…}. It returns
// it only if keys.ParseJWS reads exactly that header back from it. A part
// has one accepted spelling, so any token starting with this part and a
// dot has that header as far as ParseJWS is concerned: its alg is k's, its
// kid is k's and its typ is typ.
func encodedHeader(k trustedKey, typ string) (string, bool) {
	want := keys.Header{Alg: k.pub.Algorithm().JWSAlg(), Kid: k.kid, Typ: typ}
	b, err := json.Marshal(want)
	if err != nil {
		return "", false
	}
	enc := base64.RawURLEncoding.EncodeToString(b)
	// A well-formed token around it: claims {} and 64 zero bytes.
	j, err := keys.ParseJWS(enc + ".e30." + strings.Repeat("A", 86))
	if err != nil || j.Header != want {
		return "", false
	}
	return enc, true
}

// ParseJWKS parses a JWK Set as served at /.well-known/jwks.json. It is
// strict: data MUST be at most MaxJWKSSize bytes holding exactly one JSON
// object, without duplicate members anywhere, with a "keys" array of
// objects whose known members (kty, crv, x, y, kid, alg, use and the
// keyward_* labels) are strings, matched by exact name. A key with a
// private member (d, p, q, dp, dq, qi, k) is refused: a trust bundle MUST
// NOT carry secrets. Other members are ignored, as RFC 7517 requires. The
// keys themselves are checked by NewVerifier.
func ParseJWKS(data []byte) (keys.JWKS, error) {
	set, err := parseJWKS(data)
	if err != nil {
		return keys.JWKS{}, fmt.Errorf("keyward: jwks: %w", err)
	}
	return set, nil
}

// parseJWKS is ParseJWKS without the "keyward: jwks: " prefix on errors.
func parseJWKS(data []byte) (keys.JWKS, error) {
	if len(data) > MaxJWKSSize {
		return keys.JWKS{}, fmt.Errorf("larger than %d bytes", MaxJWKSSize)
	}
	if err := checkJSON(data); err != nil {
		return keys.JWKS{}, err
	}
	top, err := object(data)
	if err != nil {
		return keys.JWKS{}, err
	}
	var raws []json.RawMessage
	f := fields{what: "member", m: top}
	f.decode("keys", &raws, true, false)
	if f.err != nil {
		return keys.JWKS{}, f.err
	}
	set := keys.JWKS{Keys: make([]keys.JWK, 0, len(raws))}
	for i, raw := range raws {
		m, err := object(raw)
		if err != nil {
			return keys.JWKS{}, fmt.Errorf("key #%d: %w", i, err)
		}
		for _, secret := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
			if _, ok := m[secret]; ok {
				return keys.JWKS{}, fmt.Errorf("key #%d has private member %q", i, secret)
			}
		}
		f := fields{what: "member", m: m}
		j := keys.JWK{
			Kty:     f.str("kty", true, true),
			Crv:     f.str("crv", false, false),
			X:       f.str("x", false, false),
			Y:       f.str("y", false, false),
			Kid:     f.str("kid", false, false),
			Alg:     f.str("alg", false, false),
			Use:     f.str("use", false, false),
			State:   f.str("keyward_state", false, false),
			Product: f.str("keyward_product", false, false),
			Purpose: f.str("keyward_purpose", false, false),
		}
		if f.err != nil {
			return keys.JWKS{}, fmt.Errorf("key #%d: %w", i, f.err)
		}
		set.Keys = append(set.Keys, j)
	}
	return set, nil
}

// MarkCompromised makes v refuse, from now on, every token signed by one of
// kids, with ReasonKeyCompromised. Use it with the compromised kids of a
// verified revocation snapshot. Empty kids are ignored; there is no way
// back short of a new Verifier.
func (v *Verifier) MarkCompromised(kids ...string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.compromised == nil {
		v.compromised = map[string]string{}
	}
	for _, kid := range kids {
		if kid != "" {
			v.compromised[kid] = "marked compromised"
		}
	}
}

// VerifyCertificate verifies a license certificate (typ "license+jwt") as
// the package documentation describes and returns its claims. Every error
// is an *Error; test its reason with errors.Is(err, ErrExpired) and the
// like. It does not know whether the license was revoked after the
// certificate was signed.
func (v *Verifier) VerifyCertificate(token string) (*keyward.CertificateClaims, error) {
	key, payload, err := v.verifySignature(token, keyward.TypCertificate, make([]byte, 0, payloadRoom))
	if err != nil {
		return nil, err
	}
	out, c, ok := canonicalCertificate(payload)
	if !ok {
		// The other decoders may keep payload, which may be the buffer
		// above: they get a copy, so the buffer can live on the stack.
		if out, c, err = decodeCertificate(bytes.Clone(payload)); err != nil {
			return nil, err
		}
	}
	if err := v.checkClaims("certificate", key, c); err != nil {
		return nil, err
	}
	return out, nil
}

// decodeCertificate decodes certificate claims in any form: the second
// fast path, else the strict path.
func decodeCertificate(payload []byte) (*keyward.CertificateClaims, registered, error) {
	if out, c, ok := fastCertificate(payload); ok {
		return out, c, nil
	}
	return slowCertificate(payload)
}

// VerifyLease verifies a lease token (typ "lease+jwt") as the package
// documentation describes and returns its claims. The caller MUST compare
// the returned Fingerprint with the machine's own. Every error is an *Error.
func (v *Verifier) VerifyLease(token string) (*keyward.LeaseClaims, error) {
	key, payload, err := v.verifySignature(token, keyward.TypLease, make([]byte, 0, payloadRoom))
	if err != nil {
		return nil, err
	}
	out, c, ok := canonicalLease(payload)
	if !ok {
		// As in VerifyCertificate.
		if out, c, err = decodeLease(bytes.Clone(payload)); err != nil {
			return nil, err
		}
	}
	if err := v.checkClaims("lease", key, c); err != nil {
		return nil, err
	}
	return out, nil
}

// decodeLease decodes lease claims in any form: the second fast path, else
// the strict path.
func decodeLease(payload []byte) (*keyward.LeaseClaims, registered, error) {
	if out, c, ok := fastLease(payload); ok {
		return out, c, nil
	}
	f, c, err := commonClaims(payload)
	if err != nil {
		return nil, registered{}, err
	}
	out := &keyward.LeaseClaims{
		Issuer: c.iss, Subject: c.sub, Audience: c.aud,
		IssuedAt: c.iat, NotBefore: c.nbf, Expiry: c.exp, ID: c.jti,
		Machine:     f.str("mid", true, true),
		Fingerprint: f.str("fpr", true, true),
	}
	if f.err != nil {
		return nil, registered{}, rejectf(ReasonMalformed, "lease claims: %v", f.err)
	}
	return out, c, nil
}

// payloadRoom is the capacity of the buffer, on the caller's stack, that
// verifySignature decodes a payload into: ample for a certificate (about
// 250 bytes with two entitlements). A longer payload goes to the heap.
const payloadRoom = 1024

// signingInputRoom is the stack room for the signing input of such a
// payload: its base64url and a header. A longer one goes to the heap.
const signingInputRoom = payloadRoom*4/3 + 256

// verifySignature runs checks 1 to 5 of the package documentation and
// returns the signing key and the verified payload, which it may append to
// buf.
func (v *Verifier) verifySignature(token, typ string, buf []byte) (trustedKey, []byte, error) {
	if key, payload, done, err := v.verifyKnownHeader(token, typ, buf); done {
		return key, payload, err
	}
	return v.verifyParsed(token, typ)
}

// verifyKnownHeader is the fast path of verifySignature, for tokens whose
// header is one of v.headers (the header Keyward signs with, of a key
// trusted to sign license tokens) and of typ: it compares the first part
// with those strings instead of decoding and parsing it, decodes the
// payload into buf, and checks the rest of checks 1 to 5 as verifyParsed
// does, with the same results (TestKnownHeaderAgrees). done is false, and
// nothing was decided, when verifyParsed must look at the token: another
// header, or a part verifyParsed refuses as malformed.
func (v *Verifier) verifyKnownHeader(token, typ string, buf []byte) (key trustedKey, payload []byte, done bool, err error) {
	if len(token) > keys.MaxJWSSize {
		return trustedKey{}, nil, false, nil
	}
	head, rest, _ := strings.Cut(token, ".")
	hk, ok := v.headers[head]
	if !ok || hk.typ != typ {
		return trustedKey{}, nil, false, nil
	}
	body, sig, ok := strings.Cut(rest, ".")
	// 86 characters encode 64 bytes; a third dot fails the decoding.
	if !ok || body == "" || len(sig) != 86 {
		return trustedKey{}, nil, false, nil
	}
	var sigBuf [64]byte
	s, err := keys.AppendDecodeSegment(sigBuf[:0], sig)
	if err != nil || len(s) != 64 {
		return trustedKey{}, nil, false, nil
	}
	if payload, err = keys.AppendDecodeSegment(buf, body); err != nil {
		return trustedKey{}, nil, false, nil
	}
	// The token is one ParseJWS accepts, with hk's typ, kid and alg (checks
	// 1, 2 and 4); checks 3 and 5 remain.
	key = hk.key
	if how, bad := v.compromisedKid(key.kid); bad {
		return trustedKey{}, nil, true, rejectf(ReasonKeyCompromised, "kid %s: %s", key.kid, how)
	}
	// The signing input, copied to the stack: converting it with []byte()
	// would allocate, as the compiler cannot see that Verify keeps nothing.
	var inBuf [signingInputRoom]byte
	in := append(inBuf[:0], token[:len(head)+1+len(body)]...)
	if !key.pub.Verify(in, s) {
		return trustedKey{}, nil, true, rejectf(ReasonBadSignature, "kid %s: bad signature", key.kid)
	}
	return key, payload, true, nil
}

// compromisedKid reports whether kid is known to be compromised, and how.
func (v *Verifier) compromisedKid(kid string) (string, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	how, bad := v.compromised[kid]
	return how, bad
}

// verifyParsed is verifySignature for any token: keys.ParseJWS, then the
// checks on the parsed header.
func (v *Verifier) verifyParsed(token, typ string) (trustedKey, []byte, error) {
	j, err := keys.ParseJWS(token)
	if err != nil {
		var ve *keys.VerificationError
		if errors.As(err, &ve) {
			return trustedKey{}, nil, rejectf(ReasonMalformed, "%s", strings.TrimPrefix(ve.Reason, "malformed: "))
		}
		return trustedKey{}, nil, rejectf(ReasonMalformed, "%v", err)
	}
	if j.Header.Typ != typ {
		return trustedKey{}, nil, rejectf(ReasonWrongType, "typ %q, want %q", j.Header.Typ, typ)
	}
	kid := j.Header.Kid
	if kid == "" {
		return trustedKey{}, nil, rejectf(ReasonUnknownKey, "token names no kid")
	}
	if how, bad := v.compromisedKid(kid); bad {
		return trustedKey{}, nil, rejectf(ReasonKeyCompromised, "kid %s: %s", kid, how)
	}
	key, ok := v.trusted[kid]
	switch {
	case !ok:
		if why, skipped := v.unusable[kid]; skipped {
			return trustedKey{}, nil, rejectf(ReasonUnknownKey, "kid %s was skipped from the trust bundle: %s", kid, why)
		}
		return trustedKey{}, nil, rejectf(ReasonUnknownKey, "kid %s is not in the trust bundle", kid)
	case !key.signsLicenseTokens():
		return trustedKey{}, nil, rejectf(ReasonUnknownKey, "kid %s is a %q key; it does not sign license tokens", kid, key.purpose)
	}
	if err := j.Verify(key.pub); err != nil {
		var ve *keys.VerificationError
		if errors.As(err, &ve) {
			return trustedKey{}, nil, rejectf(ReasonBadSignature, "kid %s: %s", kid, ve.Reason)
		}
		return trustedKey{}, nil, rejectf(ReasonBadSignature, "kid %s: %v", kid, err)
	}
	return key, j.Payload, nil
}

// registered holds the registered claims both token types carry.
type registered struct {
	iss, sub, aud, jti string
	iat, nbf, exp      int64
}

// commonClaims checks that payload is one JSON object without duplicate
// members and reads the registered claims. The returned fields reader has
// the first error; the error result is set only if payload is not an object.
func commonClaims(payload []byte) (*fields, registered, error) {
	if err := checkJSON(payload); err != nil {
		return nil, registered{}, rejectf(ReasonMalformed, "claims: %v", err)
	}
	m, err := object(payload)
	if err != nil {
		return nil, registered{}, rejectf(ReasonMalformed, "claims: %v", err)
	}
	f := &fields{what: "claim", m: m}
	c := registered{
		iss: f.str("iss", true, true),
		sub: f.str("sub", true, true),
		aud: f.str("aud", true, true),
		iat: f.unix("iat"),
		nbf: f.unix("nbf"),
		exp: f.unix("exp"),
		jti: f.str("jti", true, true),
	}
	return f, c, nil
}

// checkClaims runs checks 7 to 9 of the package documentation.
func (v *Verifier) checkClaims(what string, key trustedKey, c registered) error {
	now := v.now()
	if nbf := time.Unix(c.nbf, 0); nbf.After(now.Add(v.leeway)) {
		return rejectf(ReasonNotYetValid, "%s not valid before %s (now %s, leeway %s)", what, stamp(nbf), stamp(now), v.leeway)
	}
	if exp := time.Unix(c.exp, 0); !now.Add(-v.leeway).Before(exp) {
		return rejectf(ReasonExpired, "%s expired at %s (now %s, leeway %s)", what, stamp(exp), stamp(now), v.leeway)
	}
	if v.issuer != "" && c.iss != v.issuer {
		return rejectf(ReasonWrongIssuer, "%s issued by %q, want %q", what, c.iss, v.issuer)
	}
	if v.audience != "" && c.aud != v.audience {
		return rejectf(ReasonWrongAudience, "%s for product %q, want %q", what, c.aud, v.audience)
	}
	if key.product != "" && c.aud != key.product {
		return rejectf(ReasonWrongAudience, "%s for product %q signed by a key of product %q", what, c.aud, key.product)
	}
	return v.checkRevocation(key, c) // check 9
}

// checkRevocation runs check 9: the revocation cache, when configured.
func (v *Verifier) checkRevocation(key trustedKey, c registered) error {
	if v.revocations == nil {
		return nil
	}
	return v.revocations.Check(c.sub, key.kid)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// slowCertificate decodes certificate claims strictly, with a precise
// message for every refusal.
func slowCertificate(payload []byte) (*keyward.CertificateClaims, registered, error) {
	f, c, err := commonClaims(payload)
	if err != nil {
		return nil, registered{}, err
	}
	var lic map[string]json.RawMessage
	if f.decode("lic", &lic, true, false) && lic == nil {
		f.failf("claim %q is not an object", "lic")
	}
	out := &keyward.CertificateClaims{
		Issuer: c.iss, Subject: c.sub, Audience: c.aud,
		IssuedAt: c.iat, NotBefore: c.nbf, Expiry: c.exp, ID: c.jti,
	}
	if f.err == nil {
		lf := fields{what: "claim lic member", m: lic}
		out.License = keyward.LicenseInfo{
			Policy:      lf.count("policy", true),
			MaxMachines: lf.count("max_machines", true),
			Holder:      lf.str("holder", true, false),
		}
		var exp int64
		if lf.decode("expires_at", &exp, true, true) {
			if exp < 0 || exp > maxUnix {
				lf.failf("claim lic member %q out of range", "expires_at")
			}
			out.License.ExpiresAt = &exp
		}
		lf.decode("entitlements", &out.License.Entitlements, true, true)
		f.err = lf.err
	}
	if f.err != nil {
		return nil, registered{}, rejectf(ReasonMalformed, "certificate claims: %v", f.err)
	}
	return out, c, nil
}
