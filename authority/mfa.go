package authority

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
)

// Second factor: TOTP (RFC 6238) as authenticator apps expect it — HMAC-SHA-1,
// 6 digits, 30-second steps. A principal enrolls once (EnrollMFA); the
// secret is sealed under the KEK and never shown again. A request that
// uses a permission listed in the policy's mfa carries a code (API header
// X-Keyward-OTP). Codes are compared in constant time, accepted one step
// either side of now (clock skew), and are one-time: a code is refused
// unless its step is later than the last step accepted for the principal.
// MFAMaxFailures wrong codes in a row lock the principal's second factor
// for MFALockout.

// TOTP parameters.
const (
	TOTPDigits     = 6
	TOTPPeriod     = 30 * time.Second
	totpSkewSteps  = 1
	totpSecretSize = 20 // bytes: 160 bits, RFC 4226's recommendation
	MFAMaxFailures = 5
	MFALockout     = 15 * time.Minute
)

// HOTP returns the RFC 4226 one-time password of counter under secret
// (HMAC-SHA-1, dynamic truncation) with digits decimal digits (6 to 8).
func HOTP(secret []byte, counter uint64, digits int) string {
	m := hmac.New(sha1.New, secret)
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], counter)
	m.Write(c[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	mod := uint32(1)
	for range digits {
		mod *= 10
	}
	return fmt.Sprintf("%0*d", digits, v%mod)
}

// TOTP returns the RFC 6238 code of secret at t (SHA-1, 30-second steps
// from the Unix epoch).
func TOTP(secret []byte, t time.Time, digits int) string {
	return HOTP(secret, uint64(totpStep(t)), digits)
}

func totpStep(t time.Time) int64 { return t.Unix() / int64(TOTPPeriod/time.Second) }

var totpEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// DecodeTOTPSecret reads a base32 TOTP secret as EnrollMFA prints it
// (case-insensitive, spaces ignored).
func DecodeTOTPSecret(s string) ([]byte, error) {
	var b []byte
	for _, r := range s {
		if r == ' ' {
			continue
		}
		if 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		b = append(b, byte(r))
	}
	return totpEncoding.DecodeString(string(b))
}

type otpKey struct{}

// WithOTP returns ctx carrying the TOTP code a request came with ("" when
// it came with none). Transports that authenticate tokens MUST call it for
// every authenticated request: its presence is what makes the authority
// enforce the policy's mfa list (in-process callers are trusted).
func WithOTP(ctx context.Context, code string) context.Context {
	return context.WithValue(ctx, otpKey{}, code)
}

func otpFromContext(ctx context.Context) (code string, enforced bool) {
	code, enforced = ctx.Value(otpKey{}).(string)
	return code, enforced
}

// errWrongCode marks an MFA_INVALID that counts against the enrollment.
var errWrongCode = errors.New("wrong or replayed TOTP code")

func mfaAD(principal string) []byte { return []byte("mfa:" + principal) }

// MFASecret is a new enrollment, shown once.
type MFASecret struct {
	Principal string // the principal's name
	Secret    string // base32, as authenticator apps take it
	URI       string // otpauth://totp/… for QR codes
}

// EnrollMFA gives the principal in ctx (an API token's) a new TOTP secret.
// A principal already enrolled must prove the current factor with a valid
// code (WithOTP) to replace it; otherwise EMFARequired (an admin can
// ResetMFA a lost authenticator).
func (a *Authority) EnrollMFA(ctx context.Context) (*MFASecret, error) {
	p := keyward.PrincipalFromContext(ctx)
	if !isTokenPrincipal(p) {
		return nil, keyward.Errorf(keyward.EForbidden, "only the principal of an API token can enroll a second factor")
	}
	secret := make([]byte, totpSecretSize)
	if _, err := io.ReadFull(a.rand, secret); err != nil {
		return nil, fmt.Errorf("generate totp secret: %w", err)
	}
	defer clear(secret)
	who := identity(p)
	sealed, err := a.keks.Seal(secret, mfaAD(who))
	if err != nil {
		return nil, fmt.Errorf("seal totp secret: %w", err)
	}
	err = a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		before := "none"
		old, err := tx.MFAEnrollment(who)
		switch {
		case keyward.ErrorCode(err) == keyward.ENotFound:
		case err != nil:
			return err
		default:
			code, _ := otpFromContext(ctx)
			if code == "" {
				return keyward.Errorf(keyward.EMFARequired, "%s already has a second factor: give a current code (--otp) to replace it, or ask an admin to reset it (keyward mfa reset)", principalName(p))
			}
			if err := a.verifyOTP(tx, now, old, code); err != nil {
				return err
			}
			before = "enrolled"
		}
		if err := tx.PutMFAEnrollment(&keyward.MFAEnrollment{Principal: who, Name: p.Name, Sealed: sealed, CreatedAt: now}); err != nil {
			return err
		}
		return a.record(ctx, tx, now, change{
			action: "mfa.enroll", event: "mfa.enrolled", targetType: "principal", targetID: p.Name,
			before: before, after: "enrolled", details: map[string]any{"method": "totp", "digits": TOTPDigits, "period_seconds": int(TOTPPeriod / time.Second)},
		})
	})
	if err != nil {
		return nil, a.refused(ctx, PermMFAEnroll, "principal", p.Name, err)
	}
	enc := totpEncoding.EncodeToString(secret)
	issuer := "Keyward"
	if a.issuer != "" && a.issuer != "keyward" {
		issuer = "Keyward " + a.issuer
	}
	q := url.Values{"secret": {enc}, "issuer": {issuer}, "algorithm": {"SHA1"}, "digits": {fmt.Sprint(TOTPDigits)}, "period": {fmt.Sprint(int(TOTPPeriod / time.Second))}}
	u := url.URL{Scheme: "otpauth", Host: "totp", Path: "/" + issuer + ":" + p.Name, RawQuery: q.Encode()}
	return &MFASecret{Principal: p.Name, Secret: enc, URI: u.String()}, nil
}

// ResetMFA removes the enrollment of the principal named name (a lost
// authenticator): its next sensitive action needs a new enrollment.
func (a *Authority) ResetMFA(ctx context.Context, name string) error {
	who := keyward.TokenPrincipal(name)
	err := a.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.DeleteMFAEnrollment(who); err != nil {
			if keyward.ErrorCode(err) == keyward.ENotFound {
				return keyward.Errorf(keyward.ENotFound, "principal %q has no second factor", name)
			}
			return err
		}
		return a.record(ctx, tx, a.clock.Now(), change{
			action: "mfa.reset", event: "mfa.reset", targetType: "principal", targetID: name, before: "enrolled", after: "none",
		})
	})
	return a.refused(ctx, PermTokenAdmin, "principal", name, err)
}

// RequireMFA checks, for a request that carries a token (WithOTP), that
// the principal proved its second factor if the policy of productID ("" =
// server-wide: the built-in policy) lists perm under mfa. It consumes the
// code. Refusals (EMFARequired, EMFAInvalid) are audited against
// targetType and targetID.
func (a *Authority) RequireMFA(ctx context.Context, perm, productID, targetType, targetID string) error {
	if _, enforced := otpFromContext(ctx); !enforced {
		return nil
	}
	pol, err := a.policy(ctx, productID)
	if err != nil {
		return err
	}
	if !slices.Contains(pol.MFA, perm) {
		return nil
	}
	err = a.store.Update(ctx, func(tx store.Tx) error {
		return a.checkMFA(ctx, tx, a.clock.Now(), pol, perm)
	})
	return a.refused(ctx, perm, targetType, targetID, err)
}

// admitMFA is RequireMFA inside a transaction the caller already holds, for
// actions whose product is known only once the transaction has read it.
func (a *Authority) admitMFA(ctx context.Context, tx store.Tx, now time.Time, productID, perm string) error {
	if _, enforced := otpFromContext(ctx); !enforced {
		return nil
	}
	pol, err := a.policy(ctx, productID)
	if err != nil {
		return err
	}
	if !slices.Contains(pol.MFA, perm) {
		return nil
	}
	return a.checkMFA(ctx, tx, now, pol, perm)
}

// checkMFA verifies and consumes the request's code for perm.
func (a *Authority) checkMFA(ctx context.Context, tx store.Tx, now time.Time, pol *keyward.Policy, perm string) error {
	p := keyward.PrincipalFromContext(ctx)
	e, err := tx.MFAEnrollment(identity(p))
	if keyward.ErrorCode(err) == keyward.ENotFound {
		return keyward.Errorf(keyward.EMFARequired, "%s needs a second factor (policy %s mfa) and %s has none: enroll with `keyward mfa enroll`, then pass --otp CODE", perm, policyName(pol), principalName(p))
	} else if err != nil {
		return err
	}
	code, _ := otpFromContext(ctx)
	if code == "" {
		return keyward.Errorf(keyward.EMFARequired, "%s needs a TOTP code (policy %s mfa): pass --otp CODE (HTTP header X-Keyward-OTP)", perm, policyName(pol))
	}
	return a.verifyOTP(tx, now, e, code)
}

// verifyOTP checks code against e at now and, if it is good, records its
// step so it cannot be used again.
func (a *Authority) verifyOTP(tx store.Tx, now time.Time, e *keyward.MFAEnrollment, code string) error {
	if e.LockedUntil != nil && now.Before(*e.LockedUntil) {
		return keyward.Errorf(keyward.EMFAInvalid, "too many wrong codes: the second factor is locked until %s", e.LockedUntil.UTC().Format(time.RFC3339))
	}
	if len(code) != TOTPDigits || !allDigits(code) {
		return &keyward.Error{Code: keyward.EMFAInvalid, Message: fmt.Sprintf("a TOTP code is %d digits", TOTPDigits), Err: errWrongCode}
	}
	secret, err := a.keks.Open(e.Sealed, mfaAD(e.Principal))
	if err != nil {
		return fmt.Errorf("open totp secret of %s: %w", e.Principal, err)
	}
	defer clear(secret)
	step := totpStep(now)
	matched := int64(-1)
	for s := step - totpSkewSteps; s <= step+totpSkewSteps; s++ {
		// Every candidate is computed and compared: no early exit.
		ok := subtle.ConstantTimeCompare([]byte(HOTP(secret, uint64(s), TOTPDigits)), []byte(code))
		if ok == 1 && s > matched {
			matched = s
		}
	}
	if matched < 0 {
		return &keyward.Error{Code: keyward.EMFAInvalid, Message: "wrong TOTP code", Err: errWrongCode}
	}
	if matched <= e.LastStep {
		return &keyward.Error{Code: keyward.EMFAInvalid, Message: "this TOTP code was already used: wait for the next one", Err: errWrongCode}
	}
	e.LastStep, e.Failures, e.LockedUntil = matched, 0, nil
	return tx.PutMFAEnrollment(e)
}

// countMFAFailure counts a wrong code against the principal in ctx and
// locks its second factor after MFAMaxFailures in a row.
func (a *Authority) countMFAFailure(ctx context.Context, tx store.Tx, now time.Time) error {
	e, err := tx.MFAEnrollment(identity(keyward.PrincipalFromContext(ctx)))
	if keyward.ErrorCode(err) == keyward.ENotFound {
		return nil
	} else if err != nil {
		return err
	}
	e.Failures++
	if e.Failures >= MFAMaxFailures {
		until := now.Add(MFALockout)
		e.LockedUntil, e.Failures = &until, 0
	}
	return tx.PutMFAEnrollment(e)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// rewrapMFASecrets re-seals every TOTP secret not sealed with ring's
// primary KEK (KEK rotation, RewrapAll).
func rewrapMFASecrets(tx store.Tx, ring *keys.KEKRing) (int, error) {
	es, err := tx.MFAEnrollments()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range es {
		if ring.SealedWithPrimary(e.Sealed) {
			continue
		}
		ad := mfaAD(e.Principal)
		plain, err := ring.Open(e.Sealed, ad)
		if err != nil {
			return n, fmt.Errorf("open totp secret of %s: %w", e.Principal, err)
		}
		e.Sealed, err = ring.Seal(plain, ad)
		clear(plain)
		if err != nil {
			return n, err
		}
		if err := tx.PutMFAEnrollment(e); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// MFAMayApply reports whether some policy in force (the built-in one or a
// product's) lists perm under mfa, so a transport can skip looking up the
// product of a request that can never need a second factor. It is true
// when the policies come from a Config.Policies source it cannot list.
func (a *Authority) MFAMayApply(perm string) bool {
	if a.stored == nil || a.policies != PolicySource(a.stored) {
		return true
	}
	if slices.Contains(a.stored.builtin.Policy().MFA, perm) {
		return true
	}
	a.stored.mu.RLock()
	defer a.stored.mu.RUnlock()
	for _, c := range a.stored.byProduct {
		if slices.Contains(c.Policy().MFA, perm) {
			return true
		}
	}
	return false
}
