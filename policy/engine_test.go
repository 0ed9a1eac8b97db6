package policy

import (
	"context"
	"testing"
)

func principals() map[string]any {
	return map[string]any{"aziot": map[string]any{"principals": map[string]any{
		"keyd":  map[string]any{"1000": []any{"dev-*", "exact"}, "1001": []any{"?"}},
		"certd": map[string]any{"1000": []any{"cert-*"}},
	}}}
}

func TestDefaultPolicyMatchesUpstream(t *testing.T) {
	e, err := NewEngine(nil, principals())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		in    Input
		allow bool
	}{
		{"root may create any key", Input{Service: "keyd", Operation: "keyd.key.create", Caller: Caller{UID: 0}, Resource: map[string]any{"key_id": "x"}}, true},
		{"pattern prefix", Input{Service: "keyd", Operation: "keyd.keypair.create", Caller: Caller{UID: 1000}, Resource: map[string]any{"key_id": "dev-1"}}, true},
		{"star matches empty", Input{Service: "keyd", Operation: "keyd.key.load", Caller: Caller{UID: 1000}, Resource: map[string]any{"key_id": "dev-"}}, true},
		{"exact", Input{Service: "keyd", Operation: "keyd.key.import", Caller: Caller{UID: 1000}, Resource: map[string]any{"key_id": "exact"}}, true},
		{"case-sensitive", Input{Service: "keyd", Operation: "keyd.key.load", Caller: Caller{UID: 1000}, Resource: map[string]any{"key_id": "Exact"}}, false},
		{"whole string", Input{Service: "keyd", Operation: "keyd.key.load", Caller: Caller{UID: 1000}, Resource: map[string]any{"key_id": "exact2"}}, false},
		{"question mark one char", Input{Service: "keyd", Operation: "keyd.key.load", Caller: Caller{UID: 1001}, Resource: map[string]any{"key_id": "é"}}, true},
		{"question mark not two", Input{Service: "keyd", Operation: "keyd.key.load", Caller: Caller{UID: 1001}, Resource: map[string]any{"key_id": "ab"}}, false},
		{"unknown uid", Input{Service: "keyd", Operation: "keyd.keypair.move", Caller: Caller{UID: 7}, Resource: map[string]any{"key_id": "dev-1"}}, false},
		{"handle ops need no principal", Input{Service: "keyd", Operation: "keyd.sign", Caller: Caller{UID: 7}, Resource: map[string]any{"key_id": "x"}}, true},
		{"cert read by anyone", Input{Service: "certd", Operation: "certd.cert.get", Caller: Caller{UID: 7}, Resource: map[string]any{"cert_id": "x"}}, true},
		{"cert write needs pattern", Input{Service: "certd", Operation: "certd.cert.import", Caller: Caller{UID: 7}, Resource: map[string]any{"cert_id": "cert-1"}}, false},
		{"cert write allowed", Input{Service: "certd", Operation: "certd.cert.delete", Caller: Caller{UID: 1000}, Resource: map[string]any{"cert_id": "cert-1"}}, true},
		{"keyd patterns do not grant certs", Input{Service: "certd", Operation: "certd.cert.create", Caller: Caller{UID: 1000}, Resource: map[string]any{"cert_id": "dev-1"}}, false},
	}
	for _, c := range cases {
		d, err := e.Decide(context.Background(), &c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if d.Allowed() != c.allow {
			t.Errorf("%s: allowed = %v, want %v", c.name, d.Allowed(), c.allow)
		}
	}
}

func TestCustomDenyWins(t *testing.T) {
	deny := `package aziot.authz
import rego.v1
deny contains "incident" if input.caller.uid == 0
`
	e, err := NewEngine(map[string]string{"incident.rego": deny}, principals())
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(context.Background(), &Input{Service: "keyd", Operation: "keyd.sign", Caller: Caller{UID: 0}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed() || len(d.Deny) != 1 || d.Deny[0] != "incident" {
		t.Fatalf("decision %+v", d)
	}
}

func TestBrokenUpdateKeepsPrevious(t *testing.T) {
	e, err := NewEngine(nil, principals())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Update(map[string]string{"bad.rego": "package aziot.authz\nallow if {"}, nil); err == nil {
		t.Fatal("expected a compile error")
	}
	d, err := e.Decide(context.Background(), &Input{Service: "keyd", Operation: "keyd.key.load", Caller: Caller{UID: 1000}, Resource: map[string]any{"key_id": "dev-1"}})
	if err != nil || !d.Allowed() {
		t.Fatalf("previous policy lost: %+v %v", d, err)
	}
}

func TestGlobMatch(t *testing.T) {
	cases := []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"*", "anything", true}, {"a*b", "ab", true}, {"a*b", "axxb", true},
		{"a*b", "axxbc", false}, {"?", "", false}, {"??", "ab", true}, {"a?c", "abc", true},
		{"[a]", "a", false}, {"[a]", "[a]", true}, {"{a,b}", "a", false}, {"*.*", "x.y", true},
		{"**a", "bba", true}, {"a*a*a", "aaaa", true}, {"a*a*a", "aa", false}, {"", "", true},
	}
	for _, c := range cases {
		if got := GlobMatch(c.p, c.s); got != c.want {
			t.Errorf("GlobMatch(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
}

func FuzzGlobMatch(f *testing.F) {
	f.Add("a*b?c", "axbyc")
	f.Fuzz(func(t *testing.T, p, s string) {
		GlobMatch(p, s)
		if !GlobMatch(p, p) && !containsMeta(p) {
			t.Fatalf("literal pattern %q does not match itself", p)
		}
	})
}

func containsMeta(p string) bool {
	for _, r := range p {
		if r == '*' || r == '?' {
			return true
		}
	}
	return false
}
