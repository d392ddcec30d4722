package keyward_test

import (
	"errors"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// TestKeyTransitions walks every (state, action) pair: the allowed ones
// reach the state spec 2.1 draws, every other one is refused.
func TestKeyTransitions(t *testing.T) {
	want := map[keyward.KeyState]map[keyward.KeyAction]keyward.KeyState{
		keyward.KeyPending:     {keyward.KeyActivate: keyward.KeyActive, keyward.KeyDestroy: keyward.KeyDestroyed, keyward.KeyCompromise: keyward.KeyCompromised},
		keyward.KeyActive:      {keyward.KeyRetire: keyward.KeyRetired, keyward.KeyCompromise: keyward.KeyCompromised},
		keyward.KeyRetired:     {keyward.KeyDestroy: keyward.KeyDestroyed, keyward.KeyCompromise: keyward.KeyCompromised, keyward.KeyRollback: keyward.KeyActive},
		keyward.KeyDestroyed:   {},
		keyward.KeyCompromised: {},
	}
	n := 0
	for _, from := range keyward.KeyStates() {
		for _, action := range keyward.KeyActions() {
			got, err := keyward.KeyTransition(from, action)
			if to, ok := want[from][action]; ok {
				n++
				if err != nil || got != to {
					t.Errorf("KeyTransition(%s, %s) = %q, %v; want %q", from, action, got, err, to)
				}
				continue
			}
			if keyward.ErrorCode(err) != keyward.EIllegalTransition {
				t.Errorf("KeyTransition(%s, %s) = %q, %v; want ILLEGAL_TRANSITION", from, action, got, err)
			}
		}
	}
	if n != 8 {
		t.Errorf("walked %d allowed transitions, want 8", n)
	}
}

// TestLicenseTransitions does the same for spec 2.2.
func TestLicenseTransitions(t *testing.T) {
	want := map[keyward.LicenseState]map[keyward.LicenseAction]keyward.LicenseState{
		keyward.LicenseActive: {
			keyward.LicenseSuspend: keyward.LicenseSuspended, keyward.LicenseRevoke: keyward.LicenseRevoked,
			keyward.LicenseExpire: keyward.LicenseExpired, keyward.LicenseRetire: keyward.LicenseRetired,
			keyward.LicenseReissue: keyward.LicenseActive,
		},
		keyward.LicenseSuspended: {keyward.LicenseReinstate: keyward.LicenseActive, keyward.LicenseRevoke: keyward.LicenseRevoked},
		keyward.LicenseRevoked:   {},
		keyward.LicenseExpired:   {},
		keyward.LicenseRetired:   {},
	}
	for _, from := range keyward.LicenseStates() {
		for _, action := range keyward.LicenseActions() {
			got, err := keyward.LicenseTransition(from, action)
			if to, ok := want[from][action]; ok {
				if err != nil || got != to {
					t.Errorf("LicenseTransition(%s, %s) = %q, %v; want %q", from, action, got, err, to)
				}
				continue
			}
			if keyward.ErrorCode(err) != keyward.EIllegalTransition {
				t.Errorf("LicenseTransition(%s, %s) = %q, %v; want ILLEGAL_TRANSITION", from, action, got, err)
			}
		}
	}
}

func TestErrorCode(t *testing.T) {
	if got := keyward.ErrorCode(nil); got != "" {
		t.Errorf("ErrorCode(nil) = %q", got)
	}
	if got := keyward.ErrorCode(errors.New("boom")); got != keyward.EInternal {
		t.Errorf("ErrorCode(plain) = %q", got)
	}
	wrapped := errors.Join(errors.New("ctx"), keyward.Errorf(keyward.ENotFound, "license x not found"))
	if got := keyward.ErrorCode(wrapped); got != keyward.ENotFound {
		t.Errorf("ErrorCode(wrapped) = %q", got)
	}
	if got := keyward.ErrorMessage(errors.New("secret detail")); got != "internal error" {
		t.Errorf("ErrorMessage(plain) = %q leaks the cause", got)
	}
}

func TestParseDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"90d", 90 * 24 * time.Hour}, {"1d12h", 36 * time.Hour}, {"15m", 15 * time.Minute}, {"30s", 30 * time.Second}, {"72h", 72 * time.Hour}, {"0.5d", 12 * time.Hour},
	} {
		got, err := keyward.ParseDuration(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "-1d", "d", "1x", "5", "1dd", "1d-1h"} {
		if _, err := keyward.ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", bad)
		}
	}
	if got := keyward.FormatDuration(90 * 24 * time.Hour); got != "90d" {
		t.Errorf("FormatDuration(90d) = %q", got)
	}
}

func TestNewIDSortsByTime(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	a, err := keyward.NewID("lic", t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := keyward.NewID("lic", t0.Add(time.Millisecond), nil)
	if !(a < b) || len(a) != len("lic_")+26 {
		t.Errorf("NewID: %q, %q: want sorted, 30 chars", a, b)
	}
}
