package keyward

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a duration as time.ParseDuration does, and also
// accepts whole or fractional days with the "d" unit ("90d", "1d12h").
// Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	rest := s
	var days time.Duration
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		n, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("duration %q: bad day count", s)
		}
		days = time.Duration(n * float64(24*time.Hour))
		rest = rest[i+1:]
		if rest == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q: want e.g. 90d, 36h, 15m or 30s", s)
	}
	return days + d, nil
}

// FormatDuration writes d with a "d" unit for whole days ("90d"), and
// time.Duration's form otherwise.
func FormatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}
