package policy

import (
	"context"
	"testing"
)

// The embedded Rego tests of the default policy: every row of upstream's authorization
// rules for keyd, certd, identityd and tpmd.
func TestDefaultPolicyRegoTests(t *testing.T) {
	results, err := RunDefaultTests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 20 {
		t.Fatalf("only %d tests ran", len(results))
	}
	for _, r := range results {
		if !r.Pass {
			t.Errorf("%s\n%s", r, r.Output)
		}
	}
}
