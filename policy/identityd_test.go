package policy

import (
	"context"
	"reflect"
	"testing"
)

// Caller resolution of api-identity.md §1.1, then the default policy's matrix over it.
func TestIdentitydCallerResolution(t *testing.T) {
	p := NewIdentitydPrincipals([]IdentitydPrincipal{
		{UID: 1500, Name: "edged"},  // first daemon entry: kept
		{UID: 1501, Name: "edged2"}, // second daemon entry: ignored
		{UID: 1600, Name: "m1", IDType: []string{"module"}},
		{UID: 1600, Name: "m1b", IDType: []string{"device"}}, // same uid later: replaces
		{UID: 0, Name: "rootmod", IDType: []string{"local"}, LocalID: map[string]string{"type": "x509", "attributes": "server"}},
		{UID: 1700, Name: "none", IDType: []string{}},
	})
	if !reflect.DeepEqual(p.Ignored, []string{"edged2"}) {
		t.Errorf("ignored %v", p.Ignored)
	}
	cases := []struct {
		uid  uint32
		want map[string]any
	}{
		{1500, map[string]any{"kind": "daemon", "name": "edged"}},
		{1501, map[string]any{"kind": "unknown"}},
		{1600, map[string]any{"kind": "host_process", "name": "m1b", "idtype": []any{"device"}}},
		{0, map[string]any{"kind": "host_process", "name": "rootmod", "idtype": []any{"local"}, "localid": map[string]any{"type": "x509", "attributes": "server"}}},
		{1700, map[string]any{"kind": "host_process", "name": "none", "idtype": []any{}}},
		{4242, map[string]any{"kind": "unknown"}},
	}
	for _, c := range cases {
		if got := p.Principal(c.uid); !reflect.DeepEqual(got, c.want) {
			t.Errorf("uid %d: %v, want %v", c.uid, got, c.want)
		}
	}
	if got := NewIdentitydPrincipals(nil).Principal(0); got["kind"] != "local_root" {
		t.Errorf("root without entry: %v", got)
	}

	e, err := NewEngine(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	decide := func(uid uint32, op, module string) bool {
		in := &Input{Service: "identityd", Operation: op, APIVersion: "2022-08-01", Caller: Caller{UID: uid, Principal: p.Principal(uid)}}
		if module != "" {
			in.Resource = map[string]any{"module_id": module}
		}
		d, err := e.Decide(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		return d.Allowed()
	}
	for _, c := range []struct {
		uid    uint32
		op     string
		module string
		want   bool
	}{
		{1500, "identityd.module.create", "x", true},
		{1501, "identityd.device.get", "", false},
		{1501, "identityd.trust_bundle.get", "", true},
		{1600, "identityd.device.get", "", true},
		{1600, "identityd.module.get", "m1b", false}, // idtype device only
		{0, "identityd.module.get", "rootmod", true},
		{0, "identityd.device.get", "", false}, // the root entry takes precedence over LocalRoot
		{0, "identityd.device.reprovision", "", false},
		{4242, "identityd.provisioning.get", "", true},
	} {
		if got := decide(c.uid, c.op, c.module); got != c.want {
			t.Errorf("uid %d %s(%s) = %v, want %v", c.uid, c.op, c.module, got, c.want)
		}
	}
}
