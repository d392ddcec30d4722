package postgres

import "testing"

// TestChunkRanges: the ranges cover every row once, in order, each of one
// of the fixed sizes.
func TestChunkRanges(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 63, 64, 65, 499, 500, 530, 1001, 10000} {
		next := 0
		err := chunkRanges(n, func(from, to int) error {
			size := to - from
			ok := false
			for _, c := range chunkSizes {
				ok = ok || size == c
			}
			if from != next || !ok || to > n {
				t.Fatalf("n=%d: range [%d, %d) after %d", n, from, to, next)
			}
			next = to
			return nil
		})
		if err != nil || next != n {
			t.Fatalf("n=%d: covered %d (%v)", n, next, err)
		}
	}
}
