package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/policy"
)

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyExample(t *testing.T, example, dir string) {
	t.Helper()
	src := filepath.Join(testenv.RepoRoot(), "policy", "examples", example)
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(src, e.Name()))
		writeTestFile(t, filepath.Join(dir, e.Name()), string(b))
	}
}

func runCLI(t *testing.T, a *app, args ...string) (int, string) {
	t.Helper()
	out := a.stdout.(interface{ String() string })
	before := len(out.String())
	code := run(a, args)
	s := out.String()[before:]
	if code != 0 {
		s += a.stderr.(interface{ String() string }).String()
	}
	return code, s
}

func TestPolicyTestCommand(t *testing.T) {
	a, _, _ := testApp(t)
	dir := filepath.Join(a.paths.Etc, "policy.d")
	copyExample(t, "incident-cutoff", dir)
	if code, out := runCLI(t, a, "policy", "test", "-v"); code != 0 || !strings.Contains(out, "PASS: 2/2") || !strings.Contains(out, "test_uid_1001_cut_off_everywhere: PASS") {
		t.Fatalf("%d %s", code, out)
	}
	if code, out := runCLI(t, a, "policy", "test", "--builtin", dir); code != 0 || !strings.Contains(out, "PASS: ") {
		t.Fatalf("%d %s", code, out)
	} else if n := strings.TrimPrefix(strings.TrimSpace(out[strings.LastIndex(out, "PASS: "):]), "PASS: "); !strings.HasSuffix(n, "/"+strings.Split(n, "/")[0]) || len(n) < 5 {
		t.Fatalf("builtin tests: %s", n)
	}
	if code, out := runCLI(t, a, "policy", "test", "--run", "other_uids", dir); code != 0 || !strings.Contains(out, "PASS: 1/1") {
		t.Fatalf("%d %s", code, out)
	}
	writeTestFile(t, filepath.Join(dir, "wrong_test.rego"), "package aziot.authz_test.wrong\nimport rego.v1\nimport data.aziot.authz\ntest_wrong if authz.allow with input as {\"service\": \"nope\", \"caller\": {\"uid\": 7}}\n")
	if code, out := runCLI(t, a, "policy", "test", dir); code != 1 || !strings.Contains(out, "wrong_test.rego:4: data.aziot.authz_test.wrong.test_wrong: FAIL") || !strings.Contains(out, "FAIL: 1/3") {
		t.Fatalf("%d %s", code, out)
	}
	os.Remove(filepath.Join(dir, "wrong_test.rego"))
	writeTestFile(t, filepath.Join(dir, "typo.rego"), "package aziot.authz\nallow if {\n")
	if code, out := runCLI(t, a, "policy", "test", dir); code != 1 || !strings.Contains(out, "typo.rego:") {
		t.Fatalf("%d %s", code, out)
	}
	empty := t.TempDir()
	if code, out := runCLI(t, a, "policy", "test", empty); code != 0 || !strings.Contains(out, "no tests") {
		t.Fatalf("%d %s", code, out)
	}
}

const signInput = `{"input_version": 1, "service": "keyd", "operation": "keyd.sign", "api_version": "2021-05-01",
 "caller": {"uid": 1001, "gid": 1001, "groups": [1001], "pid": 42, "exe": "/usr/bin/python3"},
 "resource": {"key_id": "device-id", "key_kind": "key"}, "request": {"algorithm": "HMAC-SHA256"}}`

func TestPolicyEvalAndExplain(t *testing.T) {
	a, _, _ := testApp(t)
	writeTestFile(t, filepath.Join(a.paths.Etc, "keyd", "config.toml"), "[[principal]]\nuid = 1001\nkeys = [\"dev-*\"]\n")
	in := filepath.Join(t.TempDir(), "in.json")
	writeTestFile(t, in, signInput)
	if code, out := runCLI(t, a, "policy", "eval", "--input", in); code != 0 || !strings.Contains(out, "result:    allow") || !strings.Contains(out, "policy_id: default") {
		t.Fatalf("%d %s", code, out)
	}
	copyExample(t, "edge-agent-sign", filepath.Join(a.paths.Etc, "policy.d"))
	code, out := runCLI(t, a, "policy", "eval", "--input", in, "--format", "json", "--fail")
	var res map[string]any
	if code != 3 || json.Unmarshal([]byte(out), &res) != nil || res["allowed"] != false || res["allow"] != true {
		t.Fatalf("%d %s", code, out)
	}
	if d := res["deny"].([]any); len(d) != 1 || d[0] != "only /usr/bin/edge-agent may sign with device-id" {
		t.Fatalf("%v", d)
	}
	// Principals come from the service's config.
	load := filepath.Join(t.TempDir(), "load.json")
	writeTestFile(t, load, `{"service": "keyd", "operation": "keyd.key.load", "api_version": "2021-05-01", "caller": {"uid": 1001, "gid": 1001}, "resource": {"key_id": "dev-1"}}`)
	if code, out := runCLI(t, a, "policy", "eval", "--input", load, "--fail"); code != 0 {
		t.Fatalf("%d %s", code, out)
	}
	writeTestFile(t, load, `{"service": "keyd", "operation": "keyd.key.load", "api_version": "2021-05-01", "caller": {"uid": 1001, "gid": 1001}, "resource": {"key_id": "prod"}}`)
	if code, out := runCLI(t, a, "policy", "eval", "--input", load, "--fail"); code != 3 || !strings.Contains(out, "result:    deny") {
		t.Fatalf("%d %s", code, out)
	}
	// The trace names the rules.
	code, out = runCLI(t, a, "policy", "explain", "--input", in)
	if code != 0 || !strings.Contains(out, "data.aziot.authz.deny") || !strings.Contains(out, "edge-agent.rego") {
		t.Fatalf("%d %.2000s", code, out)
	}
	if code, out := runCLI(t, a, "policy", "explain", "--input", in, "--mode", "fails"); code != 0 || !strings.Contains(out, "Fail") {
		t.Fatalf("%d %.2000s", code, out)
	}
	// An input with a typo is refused by the schema.
	writeTestFile(t, load, `{"service": "keyd", "operation": "keyd.sing", "api_version": "2021-05-01", "caller": {"uid": 1}}`)
	if code, out := runCLI(t, a, "policy", "eval", "--input", load); code != 1 || !strings.Contains(out, "not a valid input document") {
		t.Fatalf("%d %s", code, out)
	}
}

func ecKeyPair(t *testing.T) (privPath, pubPEM string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	privPath = filepath.Join(t.TempDir(), "ops.key")
	writeTestFile(t, privPath, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	return privPath, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

func TestPolicyBuildInstallStatus(t *testing.T) {
	a, _, _ := testApp(t)
	priv, pub := ecKeyPair(t)
	pubPath := filepath.Join(a.paths.Etc, "policy-keys", "ops.pem")
	writeTestFile(t, pubPath, pub)
	for _, svc := range []string{"keyd", "certd"} {
		writeTestFile(t, filepath.Join(a.paths.Etc, svc, "config.toml"), "[broker.policy_bundle_keys.ops]\nalgorithm = \"ES256\"\nkey_path = \""+pubPath+"\"\n")
	}
	src := t.TempDir()
	copyExample(t, "incident-cutoff", src)
	out1 := filepath.Join(t.TempDir(), "b1.tar.gz")
	if code, out := runCLI(t, a, "policy", "build", src, "--revision", "7", "--signing-key", priv, "--key-id", "ops", "-o", out1); code != 0 || !strings.Contains(out, "signed by ops") {
		t.Fatalf("%d %s", code, out)
	}
	if code, out := runCLI(t, a, "policy", "install", out1, "--wait", "0"); code != 0 || !strings.Contains(out, "installed revision 7") {
		t.Fatalf("%d %s", code, out)
	}
	ib, err := policy.ReadInstalled(filepath.Join(a.paths.Lib, "policy"))
	if err != nil || ib.Record.Revision != "7" || !ib.Record.Verified || ib.Record.KeyID != "ops" {
		t.Fatalf("%+v %v", ib, err)
	}
	// Lower revision, unsigned, unknown key: refused unless forced.
	out0 := filepath.Join(t.TempDir(), "b0.tar.gz")
	runCLI(t, a, "policy", "build", src, "--revision", "6", "--signing-key", priv, "--key-id", "ops", "-o", out0)
	if code, out := runCLI(t, a, "policy", "install", out0, "--wait", "0"); code != 1 || !strings.Contains(out, "lower") || !strings.Contains(out, "--force") {
		t.Fatalf("%d %s", code, out)
	}
	unsigned := filepath.Join(t.TempDir(), "u.tar.gz")
	runCLI(t, a, "policy", "build", src, "--revision", "8", "-o", unsigned)
	if code, out := runCLI(t, a, "policy", "install", unsigned, "--wait", "0"); code != 1 || !strings.Contains(out, "not signed") {
		t.Fatalf("%d %s", code, out)
	}
	rogue := filepath.Join(t.TempDir(), "r.tar.gz")
	runCLI(t, a, "policy", "build", src, "--revision", "9", "--signing-key", priv, "--key-id", "rogue", "-o", rogue)
	if code, out := runCLI(t, a, "policy", "install", rogue, "--wait", "0"); code != 1 || !strings.Contains(out, "not trusted") {
		t.Fatalf("%d %s", code, out)
	}
	if code, out := runCLI(t, a, "policy", "build", src, "--revision", "9", "--signing-key", priv, "-o", rogue); code != 2 || !strings.Contains(out, "--key-id") {
		t.Fatalf("%d %s", code, out)
	}
	if code, out := runCLI(t, a, "policy", "install", out0, "--force", "--wait", "0"); code != 0 || !strings.Contains(out, "(forced)") {
		t.Fatalf("%d %s", code, out)
	}
	// Status without running services: the installed bundle, and no service report.
	code, out := runCLI(t, a, "policy", "status")
	if code != 0 || !strings.Contains(out, "keyd:") || !strings.Contains(out, "installed bundle: revision 6, signed by ops") || !strings.Contains(out, "no status") {
		t.Fatalf("%d %s", code, out)
	}
	// With a service's status file.
	st := policy.Status{Service: "keyd", Revision: "6", PolicyID: "abc", Layers: map[string]policy.LayerStatus{
		"bundle": {Revision: "6", Modules: []string{"bundle:/incident.rego"}, Meta: map[string]any{"source": "install", "verified": true, "key_id": "ops", "forced": true}}},
		Cache: policy.CacheStatus{Enabled: true}, LastError: &policy.StatusError{Source: "policy.d", File: "/etc/aziot/policy.d/typo.rego", Message: "rego_parse_error"}}
	b, _ := json.Marshal(st)
	writeTestFile(t, filepath.Join(a.paths.Lib, "keyd", "policy", "status.json"), string(b))
	code, out = runCLI(t, a, "policy", "status")
	if code != 0 || !strings.Contains(out, "revision in force: 6") || !strings.Contains(out, "bundle: revision 6 from install, signed by ops (forced)") || !strings.Contains(out, "last refusal") {
		t.Fatalf("%d %s", code, out)
	}
	if code, out := runCLI(t, a, "policy", "status", "--json"); code != 0 || !json.Valid([]byte(out)) {
		t.Fatalf("%d %s", code, out)
	}
}
