package identityd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotbroker/aziot/broker/identityd/hubclient"
	"github.com/iotbroker/aziot/broker/identityd/state"
	"github.com/iotbroker/aziot/broker/keyd"
	"github.com/iotbroker/aziot/emulator"
	"github.com/iotbroker/aziot/policy"
	"github.com/iotbroker/aziot/sdk/keys"
	"github.com/iotbroker/aziot/sdk/sas"
)

const (
	devKeyB64 = "dGhpcy1pcy1hLXRlc3Qta2V5LWZvci1kcHMtc2FzLXRva2Vucw=="
	deviceID  = "dev-01"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serve runs h on a Unix socket in dir and returns the socket path.
func serve(t *testing.T, dir, name string, run func(ctx context.Context, l net.Listener) error) string {
	t.Helper()
	sock := filepath.Join(dir, name)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { run(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

// env is a real keyd and the emulator's hub with one SAS device whose key is in keyd.
type env struct {
	dir    string
	keydSk string
	keys   *keys.Client
	emu    *emulator.Emulator
	hub    string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	ks, err := keyd.New(&keyd.Config{AziotKeys: map[string]string{"homedir_path": filepath.Join(dir, "keys")}}, keyd.Options{Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	sock := serve(t, dir, "keyd.sock", ks.HTTP.Serve)
	kc := keys.New(sock)
	t.Cleanup(kc.Close)
	raw, _ := base64.StdEncoding.DecodeString(devKeyB64)
	if _, err := kc.ImportKey(context.Background(), "device-id", raw, "sign"); err != nil {
		t.Fatal(err)
	}
	e, err := emulator.Start(emulator.Config{DPSAddr: "off", ESTAddr: "off"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	hub := e.HubNames()[0]
	if _, err := e.CreateDevice(hub, deviceID, &emulator.Authentication{Type: "sas",
		SymmetricKey: &emulator.SymmetricKey{PrimaryKey: devKeyB64, SecondaryKey: devKeyB64}}); err != nil {
		t.Fatal(err)
	}
	return &env{dir: dir, keydSk: sock, keys: kc, emu: e, hub: hub}
}

// principals of the test config: two module principals, a device reader, a daemon.
func testPrincipals() []Principal {
	return []Principal{
		{UID: 1000, Name: "m1", IDType: []string{"module"}},
		{UID: 1001, Name: "m2", IDType: []string{"module"}},
		{UID: 1002, Name: "devreader", IDType: []string{"device"}},
		{UID: 1003, Name: "edged"},
	}
}

func (e *env) config() *Config {
	c := DefaultConfig()
	c.Hostname = "host"
	c.Homedir = filepath.Join(e.dir, "identityd")
	c.Provisioning = &Provisioning{Source: "manual", IothubHostname: e.hub, DeviceID: deviceID,
		Authentication: &ManualAuth{Method: "sas", DeviceIDPK: "device-id"}}
	c.Principals = testPrincipals()
	c.Endpoints.AziotKeyd = e.keydSk
	return &c
}

func (e *env) opts() Options {
	pool := x509.NewCertPool()
	pool.AddCert(e.emu.PKI().Root.Cert)
	return Options{Log: quiet(), HubTLS: &tls.Config{RootCAs: pool}, HubWaits: &hubclient.Waits{
		Timeout: 5 * time.Second, Retries: 1, RetryDelay: time.Millisecond,
		ThrottleBackoff: []time.Duration{time.Millisecond}, ThrottleJitter: []time.Duration{0},
		RetryAfterUnit: time.Millisecond, RetryAfterMax: 10 * time.Millisecond,
	}}
}

// start builds identityd, provisions it and serves it; the client talks to its socket.
func (e *env) start(t *testing.T, cfg *Config) (*Service, *client) {
	t.Helper()
	s, err := New(cfg, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	sub := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	sock := filepath.Join(sub, "identityd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.HTTP.Serve(ctx, l); close(done) }()
	stop := func() { cancel(); <-done; s.Close() }
	t.Cleanup(stop)
	return s, &client{t: t, c: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}}
}

type client struct {
	t *testing.T
	c *http.Client
}

// do sends a request (version "" = 2022-08-01) and returns status and body.
func (c *client) do(method, path, version, body string) (int, string) {
	c.t.Helper()
	if version == "" {
		version = "2022-08-01"
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	req, err := http.NewRequest(method, "http://identityd.sock"+path+sep+"api-version="+version, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *client) identity(method, path, body string) Identity {
	c.t.Helper()
	st, b := c.do(method, path, "", body)
	if st != 200 {
		c.t.Fatalf("%s %s: %d %s", method, path, st, b)
	}
	var id Identity
	if err := json.Unmarshal([]byte(b), &id); err != nil {
		c.t.Fatalf("%s %s: %v in %s", method, path, err, b)
	}
	return id
}

// verifyToken signs a SAS token through keyd with handle, as a host process would, and
// checks that the emulator's verifier accepts it with the registry's keys.
func (e *env) verifyToken(t *testing.T, handle, audience string, registryKeys ...string) {
	t.Helper()
	ctx := context.Background()
	tok, err := sas.New(ctx, audience, time.Now().Add(time.Hour), "", func(ctx context.Context, data []byte) ([]byte, error) {
		return e.keys.SignHMAC(ctx, handle, data)
	})
	if err != nil {
		t.Fatalf("sign SAS token: %v", err)
	}
	pt, err := emulator.ParseSAS(tok)
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	if !pt.VerifyAnyKey(registryKeys...) {
		t.Fatalf("the emulator's verifier refuses the token for %s", audience)
	}
}

func (e *env) registryModules(t *testing.T) map[string]emulator.Module {
	t.Helper()
	_, mods, ok := e.emu.GetDevice(e.hub, deviceID)
	if !ok {
		t.Fatal("device missing from the emulator registry")
	}
	return mods
}

func hubPuts(e *emulator.Emulator) int {
	n := 0
	for _, l := range e.Log() {
		if strings.HasPrefix(l.Listener, "hub:") && l.Method == http.MethodPut {
			n++
		}
	}
	return n
}

func TestDeviceAndModuleIdentities(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	_, c := e.start(t, cfg)

	// Device identity (root is LocalRoot): a working keyd handle.
	dev := c.identity("POST", "/identities/device", `{"type":"aziot"}`)
	if dev.Type != "aziot" || dev.Spec.HubName != e.hub || dev.Spec.GatewayHost != e.hub || dev.Spec.DeviceID != deviceID ||
		dev.Spec.ModuleID != "" || dev.Spec.Auth == nil || dev.Spec.Auth.Type != "sas" {
		t.Fatalf("device identity %+v", dev)
	}
	e.verifyToken(t, dev.Spec.Auth.KeyHandle, sas.DeviceAudience(e.hub, deviceID), devKeyB64)
	// Handles carry a fresh nonce each time: compare what they sign, not their text.
	got := c.identity("GET", "/identities/identity", "")
	if got.Spec.DeviceID != deviceID || got.Spec.ModuleID != "" || got.Spec.Auth == nil {
		t.Fatalf("caller identity of root %+v", got)
	}
	e.verifyToken(t, got.Spec.Auth.KeyHandle, sas.DeviceAudience(e.hub, deviceID), devKeyB64)

	// Module identities were created in the registry for the module principals.
	reg := e.registryModules(t)
	for _, m := range []string{"m1", "m2"} {
		rm, ok := reg[m]
		if !ok {
			t.Fatalf("module %s not in the registry: %v", m, reg)
		}
		id := c.identity("GET", "/identities/modules/"+m+"?type=aziot", "")
		if id.Spec.ModuleID != m || id.Spec.GenID != rm.GenerationID || id.Spec.Auth == nil || id.Spec.Auth.Type != "sas" {
			t.Fatalf("module identity %+v, registry %+v", id, rm)
		}
		e.verifyToken(t, id.Spec.Auth.KeyHandle, sas.ModuleAudience(e.hub, deviceID, m),
			rm.Authentication.SymmetricKey.PrimaryKey)
	}

	// List: every module, without auth.
	st, body := c.do("GET", "/identities/modules?type=aziot", "", "")
	var list identityList
	if st != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Identities) != 2 {
		t.Fatalf("list: %d %s", st, body)
	}
	for _, id := range list.Identities {
		if id.Spec.Auth != nil || id.Spec.GenID == "" {
			t.Fatalf("listed identity %+v", id)
		}
	}

	// Create, update (re-key keeps the generation), delete through the API.
	created := c.identity("POST", "/identities/modules", `{"type":"aziot","moduleId":"extra"}`)
	rm := e.registryModules(t)["extra"]
	if created.Spec.GenID != rm.GenerationID {
		t.Fatalf("created %+v, registry %+v", created, rm)
	}
	e.verifyToken(t, created.Spec.Auth.KeyHandle, sas.ModuleAudience(e.hub, deviceID, "extra"), rm.Authentication.SymmetricKey.PrimaryKey)
	if st, b := c.do("POST", "/identities/modules", "", `{"type":"aziot","moduleId":"extra"}`); st != 404 || !strings.Contains(b, "Hub client error") {
		t.Fatalf("create existing: %d %s", st, b)
	}
	updated := c.identity("PUT", "/identities/modules/extra?type=aziot", `{}`)
	if updated.Spec.GenID != created.Spec.GenID {
		t.Fatalf("update changed the generation: %+v", updated)
	}
	if st, b := c.do("DELETE", "/identities/modules/extra?type=aziot", "", ""); st != 204 {
		t.Fatalf("delete: %d %s", st, b)
	}
	if _, ok := e.registryModules(t)["extra"]; ok {
		t.Fatal("deleted module still in the registry")
	}
	if st, b := c.do("GET", "/identities/modules/extra?type=aziot", "", ""); st != 404 || !strings.HasPrefix(b, `{"message":"Hub client error\ncaused by: `) {
		t.Fatalf("get deleted: %d %s", st, b)
	}
}

func TestRestartKeepsModules(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	s1, _ := e.start(t, cfg)
	before := e.registryModules(t)
	s1.Close()
	cachePath := state.ModulePath(cfg.Homedir, e.hub, deviceID, "m1")
	cacheBefore, err := os.ReadFile(cachePath)
	if err != nil {
		t.Fatal(err)
	}

	e.emu.ClearLog()
	_, c := e.start(t, e.config())
	after := e.registryModules(t)
	for _, m := range []string{"m1", "m2"} {
		if after[m].GenerationID != before[m].GenerationID || after[m].Etag != before[m].Etag {
			t.Fatalf("module %s changed across restart: %+v -> %+v", m, before[m], after[m])
		}
	}
	if n := hubPuts(e.emu); n != 0 {
		t.Fatalf("restart sent %d PUTs to the hub", n)
	}
	if cacheAfter, err := os.ReadFile(cachePath); err != nil || string(cacheAfter) != string(cacheBefore) {
		t.Fatalf("module cache changed across restart: %q -> %q (%v)", cacheBefore, cacheAfter, err)
	}
	id := c.identity("GET", "/identities/modules/m1?type=aziot", "")
	e.verifyToken(t, id.Spec.Auth.KeyHandle, sas.ModuleAudience(e.hub, deviceID, "m1"), after["m1"].Authentication.SymmetricKey.PrimaryKey)

	// A principal removed from the config: its module is deleted on reload (prev_state);
	// a module identityd never created is left alone.
	c.identity("POST", "/identities/modules", `{"type":"aziot","moduleId":"foreign"}`)
	cfg2 := e.config()
	cfg2.Principals = cfg2.Principals[:1]
	s3, _ := e.start(t, e.config())
	if err := s3.Reload(context.Background(), cfg2); err != nil {
		t.Fatal(err)
	}
	mods := e.registryModules(t)
	if _, ok := mods["m2"]; ok {
		t.Fatal("module of a removed principal kept")
	}
	if _, ok := mods["foreign"]; !ok {
		t.Fatal("a module that was never a principal's was deleted")
	}
	if mods["m1"].GenerationID != before["m1"].GenerationID {
		t.Fatal("kept module recreated")
	}
}

// A hub answering 500 at start is a network error: identityd starts offline and serves
// module identities from the cache (flows.md §8.1).
func TestStartOfflineUsesCache(t *testing.T) {
	e := newEnv(t)
	s1, _ := e.start(t, e.config())
	s1.Close()
	e.emu.AddFault(emulator.Fault{Kind: emulator.FaultServerError, Endpoint: "hub", Status: 500})
	_, c := e.start(t, e.config())
	id := c.identity("GET", "/identities/modules/m2?type=aziot", "")
	e.verifyToken(t, id.Spec.Auth.KeyHandle, sas.ModuleAudience(e.hub, deviceID, "m2"),
		e.registryModules(t)["m2"].Authentication.SymmetricKey.PrimaryKey)
}

func TestModuleCacheServesWhenHubFails(t *testing.T) {
	e := newEnv(t)
	_, c := e.start(t, e.config())
	want := c.identity("GET", "/identities/modules/m1?type=aziot", "")
	e.emu.AddFault(emulator.Fault{Kind: emulator.FaultServerError, Endpoint: "hub", Status: 500})
	got := c.identity("GET", "/identities/modules/m1?type=aziot", "")
	if got.Spec.GenID != want.Spec.GenID || got.Spec.Auth == nil {
		t.Fatalf("from cache %+v, want %+v", got, want)
	}
	e.verifyToken(t, got.Spec.Auth.KeyHandle, sas.ModuleAudience(e.hub, deviceID, "m1"),
		e.registryModules(t)["m1"].Authentication.SymmetricKey.PrimaryKey)
	st, body := c.do("GET", "/identities/modules?type=aziot", "", "")
	if st != 200 || !strings.Contains(body, `"moduleId":"m2"`) {
		t.Fatalf("list from cache: %d %s", st, body)
	}
	if st, body := c.do("GET", "/identities/modules/nope?type=aziot", "", ""); st != 404 || !strings.Contains(body, "Hub client error") {
		t.Fatalf("uncached module with the hub down: %d %s", st, body)
	}
}

// asCaller makes the test process's uid (the socket peer) resolve to entry; nil is
// LocalRoot (uid 0 without an entry).
func asCaller(s *Service, entry *policy.IdentitydPrincipal) {
	entries := []policy.IdentitydPrincipal{}
	if entry != nil {
		entries = append(entries, *entry)
	}
	cfg := s.config()
	for _, e := range cfg.PolicyPrincipals() {
		if entry == nil || e.UID != 0 {
			entries = append(entries, e)
		}
	}
	p := policy.NewIdentitydPrincipals(entries)
	s.pmu.Lock()
	s.principals = p
	s.pmu.Unlock()
}

func TestAuthorizationMatrix(t *testing.T) {
	e := newEnv(t)
	s, c := e.start(t, e.config())
	if uid := s.principal(0); uid["kind"] != policy.KindLocalRoot {
		t.Fatal("the test process must run as root (as CI does) for the uid-0 mapping")
	}
	type caller struct {
		name  string
		entry *policy.IdentitydPrincipal
	}
	callers := []caller{
		{"localroot", nil},
		{"daemon", &policy.IdentitydPrincipal{UID: 0, Name: "edged0"}},
		{"module m1", &policy.IdentitydPrincipal{UID: 0, Name: "m1", IDType: []string{"module"}}},
		{"local m1", &policy.IdentitydPrincipal{UID: 0, Name: "m1", IDType: []string{"local"}}},
		{"device reader", &policy.IdentitydPrincipal{UID: 0, Name: "devreader", IDType: []string{"device"}}},
		{"no idtype values", &policy.IdentitydPrincipal{UID: 0, Name: "nothing", IDType: []string{}}},
	}
	type row struct {
		method, path, body string
		allowed            map[string]bool // callers allowed beside localroot and daemon
		all                bool            // every caller
	}
	rows := []row{
		{"POST", "/identities/device", `{"type":"aziot"}`, map[string]bool{"device reader": true}, false},
		{"GET", "/identities/modules/m1?type=aziot", "", map[string]bool{"module m1": true, "local m1": true}, false},
		{"GET", "/identities/modules/m2?type=aziot", "", nil, false},
		{"GET", "/identities/modules?type=aziot", "", nil, false},
		{"POST", "/identities/modules", `{"type":"aziot","moduleId":"m1"}`, nil, false},
		{"PUT", "/identities/modules/m1?type=aziot", `{}`, nil, false},
		{"DELETE", "/identities/modules/zz?type=aziot", "", nil, false},
		{"POST", "/identities/device/reprovision", "", nil, false},
		{"GET", "/trust-bundle", "", nil, true},
		{"GET", "/identities/provisioning", "", nil, true},
		{"GET", "/identities/identity", "", map[string]bool{"module m1": true, "local m1": true, "device reader": true}, false},
		// Unauthorized list with a bad type: 401 before the parameter check.
		{"GET", "/identities/modules?type=bogus", "", nil, false},
	}
	for _, cl := range callers {
		asCaller(s, cl.entry)
		full := cl.name == "localroot" || cl.name == "daemon"
		for _, r := range rows {
			st, body := c.do(r.method, r.path, "", r.body)
			want := full || r.all || r.allowed[cl.name]
			if !want && (st != 401 || body != `{"message":"authorization error"}`) {
				t.Errorf("%s: %s %s: %d %s, want 401", cl.name, r.method, r.path, st, body)
			}
			if want && st == 401 {
				t.Errorf("%s: %s %s: 401, want allowed", cl.name, r.method, r.path)
			}
		}
	}
	// Module callers get their own module from /identities/identity.
	asCaller(s, &policy.IdentitydPrincipal{UID: 0, Name: "m1", IDType: []string{"module"}})
	if id := c.identity("GET", "/identities/identity", ""); id.Spec.ModuleID != "m1" || id.Spec.Auth == nil {
		t.Fatalf("caller identity of m1: %+v", id)
	}
	// Body rules come before the decision: an unauthorized POST without a body is 400.
	asCaller(s, &policy.IdentitydPrincipal{UID: 0, Name: "nothing", IDType: []string{}})
	if st, b := c.do("POST", "/identities/device", "", ""); st != 400 || b != `{"message":"missing request body"}` {
		t.Fatalf("no body: %d %s", st, b)
	}
	if st, b := c.do("POST", "/identities/modules", "", "{"); st != 422 {
		t.Fatalf("malformed body: %d %s", st, b)
	}
}

func TestParametersAndInfo(t *testing.T) {
	e := newEnv(t)
	_, c := e.start(t, e.config())
	cases := []struct {
		method, path, version, body string
		status                      int
		want                        string
	}{
		{"GET", "/identities/modules", "", "", 400, `{"message":"parameter \"type\" has an invalid value\ncaused by: missing parameter"}`},
		{"GET", "/identities/modules?type=local", "", "", 400, `{"message":"parameter \"type\" has an invalid value\ncaused by: invalid type: local"}`},
		{"GET", "/identities/modules/%20?type=aziot", "", "", 400, `{"message":"parameter \"module_id\" has an invalid value\ncaused by: module name cannot be empty"}`},
		{"GET", "/identities/modules/m1?type=local", "", "", 400, `{"message":"parameter \"moduleId\" has an invalid value\ncaused by: local identity for m1 doesn't exist"}`},
		{"POST", "/identities/device", "", `{}`, 422, ""},
		{"PUT", "/identities/modules/m1?type=aziot", "", "", 422, ""},
		{"GET", "/identities/provisioning", "2020-09-01", "", 404, `{"message":"not found"}`},
		{"GET", "/identities/provisioning", "2021-12-01", "", 200, `{"source":"manual","auth":"sas"}`},
		{"GET", "/trust-bundle", "2020-09-01", "", 200, `{"certificate":""}`},
		{"POST", "/identities/device/reprovision", "", "", 204, ""},
		{"GET", "/identities/modules/m1", "", "", 400, `{"message":"parameter \"type\" has an invalid value\ncaused by: missing parameter"}`},
	}
	for _, tc := range cases {
		st, b := c.do(tc.method, tc.path, tc.version, tc.body)
		if st != tc.status || (tc.want != "" && b != tc.want) {
			t.Errorf("%s %s (%s): %d %s, want %d %s", tc.method, tc.path, tc.version, st, b, tc.status, tc.want)
		}
	}
	// After reprovision the modules are still served.
	c.identity("GET", "/identities/modules/m1?type=aziot", "")
}

func TestSourceNone(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Provisioning = &Provisioning{Source: "none"}
	cfg.Principals = nil
	_, c := e.start(t, cfg)
	for _, r := range [][3]string{
		{"POST", "/identities/device", `{"type":"aziot"}`},
		{"GET", "/identities/modules?type=aziot", ""},
		{"GET", "/identities/identity", ""},
	} {
		if st, b := c.do(r[0], r[1], "", r[2]); st != 400 || b != `{"message":"device identity not found"}` {
			t.Errorf("%s %s: %d %s", r[0], r[1], st, b)
		}
	}
	if st, b := c.do("GET", "/identities/provisioning", "", ""); st != 200 || b != `{"source":"none"}` {
		t.Errorf("provisioning info: %d %s", st, b)
	}
}

// With prefer_module_identity_cache the cache answers first: no hub request (flows.md §7).
func TestPreferModuleIdentityCache(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.PreferModuleIdentityCache = true
	_, c := e.start(t, cfg)
	e.emu.ClearLog()
	c.identity("GET", "/identities/modules/m1?type=aziot", "")
	if st, b := c.do("GET", "/identities/modules?type=aziot", "", ""); st != 200 || !strings.Contains(b, `"moduleId":"m2"`) {
		t.Fatalf("list: %d %s", st, b)
	}
	for _, l := range e.emu.Log() {
		if strings.HasPrefix(l.Listener, "hub:") {
			t.Fatalf("the hub was asked: %s %s", l.Method, l.Path)
		}
	}
}
