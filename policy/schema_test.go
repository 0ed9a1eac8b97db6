package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// input.schema.json is generated from the operation catalogue; run with
// AZIOT_UPDATE_SCHEMA=1 to rewrite it.
func TestSchemaIsGenerated(t *testing.T) {
	want, err := GenerateInputSchema()
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("AZIOT_UPDATE_SCHEMA") == "1" {
		if err := os.WriteFile("input.schema.json", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(InputSchema(), want) {
		t.Fatal("input.schema.json is not the generated schema: run AZIOT_UPDATE_SCHEMA=1 go test -run TestSchemaIsGenerated ./policy")
	}
}

// CompileSchema compiles the embedded schema for tests.
func compileSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(InputSchema()))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validateInput(t testing.TB, s *jsonschema.Schema, in *Input) error {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return s.Validate(v)
}

// sampleInputs builds, for every operation of the catalogue, the input its service builds.
func sampleInputs() []*Input {
	vals := map[string]any{
		"key_id": "device-id", "key_kind": "keypair", "cert_id": "device-id", "module_id": "m1",
		"preferred_algorithms": "ec-p256:*", "from": "a", "to": "b", "parameter": "algorithm",
		"algorithm": "ECDSA", "issuer_cert_id": "local-ca", "type": "aziot", "caller_identity": true,
		"local_id_opts": map[string]any{"type": "x509", "attributes": "server"},
	}
	principals := map[string]map[string]any{
		"keyd":      {"keys": []string{"dev-*"}},
		"certd":     {"certs": []string{"dev-*"}},
		"identityd": NewIdentitydPrincipals([]IdentitydPrincipal{{UID: 1000, Name: "m1", IDType: []string{"module"}}}).Principal(1000),
	}
	var out []*Input
	for _, op := range Operations {
		in := &Input{Service: op.Service, Operation: op.Name, APIVersion: "2020-09-01",
			Caller: Caller{UID: 1000, GID: 1000, Groups: []uint32{1000, 4}, PID: 42, Exe: "/usr/bin/x", Principal: principals[op.Service]}}
		for _, f := range op.Resource {
			if in.Resource == nil {
				in.Resource = map[string]any{}
			}
			in.Resource[strings.TrimSuffix(f, "?")] = vals[strings.TrimSuffix(f, "?")]
		}
		for _, f := range op.Request {
			if in.Request == nil {
				in.Request = map[string]any{}
			}
			in.Request[strings.TrimSuffix(f, "?")] = vals[strings.TrimSuffix(f, "?")]
		}
		out = append(out, in)
	}
	return out
}

func TestGeneratedInputsMatchSchema(t *testing.T) {
	s := compileSchema(t)
	for _, in := range sampleInputs() {
		if err := validateInput(t, s, in); err != nil {
			t.Errorf("%s: %v", in.Operation, err)
		}
	}
	bad := []*Input{
		{Service: "keyd", Operation: "keyd.sign", APIVersion: "2020-09-01", Resource: map[string]any{"key_id": "x", "key_kind": "key", "handle": "sr=..."}},
		{Service: "keyd", Operation: "keyd.rename", APIVersion: "2020-09-01"},
		{Service: "certd", Operation: "keyd.sign", APIVersion: "2020-09-01", Resource: map[string]any{"key_id": "x", "key_kind": "key"}},
		{Service: "keyd", Operation: "keyd.key.load", APIVersion: "2020-09-01"},
		{Service: "keyd", Operation: "keyd.sign", APIVersion: "2020-09-01", Resource: map[string]any{"key_id": "x", "key_kind": "key"}, Request: map[string]any{"algorithm": "ECDSA", "digest": "AAAA"}},
	}
	for _, in := range bad {
		if err := validateInput(t, s, in); err == nil {
			t.Errorf("schema accepts %+v", in)
		}
	}
}

// FuzzInput parses input documents as `aziotctl policy eval` does and builds what a
// decision needs: the OPA value and the cache key (which must be stable).
func FuzzInput(f *testing.F) {
	for _, in := range sampleInputs() {
		b, _ := json.Marshal(in)
		f.Add(b)
	}
	f.Add([]byte(`{"service":"keyd","caller":{"uid":1,"gid":2,"groups":[]},"resource":{"n":1.5,"l":[null,true,{"x":"y"}]}}`))
	e, err := NewEngine(nil, principals())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := ParseInput(b)
		if err != nil {
			return
		}
		_ = inputValue(in)
		if k1, k2 := keyOf(in, true), keyOf(in, true); k1 != k2 {
			t.Fatalf("unstable cache key for %s", b)
		}
		if _, err := json.Marshal(in); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Decide(context.Background(), in); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	})
}
