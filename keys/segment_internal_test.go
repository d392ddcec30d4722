package keys

import "testing"

// TestCheckSegment: checkSegment accepts exactly what AppendDecodeSegment
// decodes, and counts its bytes: every byte value at the last of 1 to 8
// positions after a valid prefix.
func TestCheckSegment(t *testing.T) {
	const prefix = "eyJhbGciOi"
	for n := 1; n <= 8; n++ {
		for c := 0; c < 256; c++ {
			part := prefix[:n-1] + string([]byte{byte(c)})
			dec, err := AppendDecodeSegment(nil, part)
			got, ok := checkSegment(part)
			if ok != (err == nil) || ok && got != len(dec) {
				t.Errorf("checkSegment(%q) = %d, %v; AppendDecodeSegment: %d bytes, %v", part, got, ok, len(dec), err)
			}
		}
	}
}
