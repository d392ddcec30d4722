package policy

import (
	"math/rand/v2"
	"testing"
	"time"

	"cel.dev/cel-go/cel"
)

// TestRateMonotone: the syntactic proof accepts the shapes rules take and
// refuses every use of the rate it cannot follow.
func TestRateMonotone(t *testing.T) {
	e, err := newEnv()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		when string
		want bool
	}{
		{"usage.validations_per_minute > 600", true},
		{"usage.validations_per_minute >= 600", true},
		{"600 < usage.validations_per_minute", true},
		{"600 <= usage.validations_per_minute", true},
		{"license.max_machines > 0 && usage.distinct_fingerprints_24h > 5 * license.max_machines", true}, // no rate at all
		{"usage.validations_per_minute > 100 && license.max_machines == 0", true},
		{"usage.validations_per_minute > 100 || usage.failed_validations_in_row > 20", true},
		{"!(usage.validations_per_minute < 100)", true},
		{"!(usage.validations_per_minute <= 100) && !(license.state == 'x')", true},
		{"usage.validations_per_minute + usage.distinct_networks_24h > 300", true},
		{"usage.validations_per_minute - 5 * usage.distinct_networks_24h > 300", true},
		{"usage.validations_per_minute > 10 * license.max_machines + 60", true},
		{"license.max_machines > 0 ? usage.validations_per_minute > 60 : usage.validations_per_minute > 600", true},
		{"usage.validations_per_minute > 600 && now > timestamp('2026-01-01T00:00:00Z')", true},

		{"usage.validations_per_minute < 600", false},
		{"usage.validations_per_minute <= 600", false},
		{"600 > usage.validations_per_minute", false},
		{"!(usage.validations_per_minute > 600)", false},
		{"usage.validations_per_minute == 601", false},
		{"usage.validations_per_minute != 0", false},
		{"usage.validations_per_minute % 7 == 0 && usage.validations_per_minute > 1", false},
		{"600 - usage.validations_per_minute > 0", false},
		{"usage.validations_per_minute * 2 > 600", false}, // * is not followed (sign of the other side)
		{"usage.validations_per_minute > 600 ? false : true", false},
		{"usage.validations_per_minute > 60 ? usage.distinct_networks_24h > 1 : false", false}, // the rate in a condition
		{"[usage].exists(u, u.validations_per_minute > 600)", false},
		{"[1].exists(x, usage.validations_per_minute > 600)", false},
		{"has(usage.validations_per_minute) && usage.distinct_networks_24h > 3", false},
		{"double(usage.validations_per_minute) > 600.0", false},
		{"usage.validations_per_minute > 600 && !(usage.validations_per_minute > 900)", false},
	} {
		checked, iss := e.Compile(c.when)
		if iss.Err() != nil {
			t.Fatalf("%s: %v", c.when, iss.Err())
		}
		if got := RateMonotone(checked.NativeRep()); got != c.want {
			t.Errorf("RateMonotone(%s) = %v, want %v", c.when, got, c.want)
		}
	}
}

// TestRateMonotoneHolds: for every expression the proof accepts, the
// evaluation never goes from true to false as the rate grows, on random
// inputs — the property the validation path relies on.
func TestRateMonotoneHolds(t *testing.T) {
	e, err := newEnv()
	if err != nil {
		t.Fatal(err)
	}
	exprs := []string{
		"usage.validations_per_minute > 600",
		"usage.validations_per_minute > 100 && license.max_machines == 0",
		"!(usage.validations_per_minute <= 100) || usage.failed_validations_in_row > 3",
		"usage.validations_per_minute - 5 * usage.distinct_networks_24h > 300",
		"license.max_machines > 0 ? usage.validations_per_minute > 60 : 200 <= usage.validations_per_minute + usage.distinct_fingerprints_24h",
	}
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	for _, w := range exprs {
		checked, iss := e.Compile(w)
		if iss.Err() != nil {
			t.Fatal(iss.Err())
		}
		if !RateMonotone(checked.NativeRep()) {
			t.Fatalf("%s: not proven monotone", w)
		}
		prg, err := e.Program(checked, cel.CostLimit(maxRuleCost))
		if err != nil {
			t.Fatal(err)
		}
		for range 200 {
			l := &License{ID: "l", State: "active", MaxMachines: r.IntN(3)}
			u := Usage{DistinctFingerprints24h: r.IntN(10), DistinctNetworks24h: r.IntN(100), FailedValidationsInRow: r.IntN(6)}
			was := false
			for rate := 0; rate < 1200; rate += 1 + r.IntN(40) {
				u.ValidationsPerMinute = rate
				v, _, err := prg.Eval(&activation{license: l, key: &Key{}, usage: &u, now: now})
				if err != nil {
					t.Fatal(err)
				}
				b := v.Value().(bool)
				if was && !b {
					t.Fatalf("%s: true below rate %d, false at it (%+v)", w, rate, u)
				}
				was = b
			}
		}
	}
}
