package authority

import (
	"encoding/json"
	"testing"
)

// TestIssueDetailsEncodeLikeMap: issued licenses' audit details are a
// struct for speed; they encode to the bytes the map they replaced did, so
// audit entries and webhook payloads keep their form.
func TestIssueDetailsEncodeLikeMap(t *testing.T) {
	for _, d := range []issueDetails{
		{Product: "acme", Holder: "cust-1", KeyPrefix: "KW1-ABCDE", PolicyVersion: 3},
		{Product: "a-b", Holder: "x@y+z:<&>", KeyPrefix: "", PolicyVersion: 0},
	} {
		got, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(map[string]any{"product": d.Product, "holder": d.Holder, "key_prefix": d.KeyPrefix, "policy_version": d.PolicyVersion})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("json.Marshal(%+v) = %s, want %s", d, got, want)
		}
	}
}
