package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotbroker/aziot/emulator"
	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/sdk/keys"
	"github.com/iotbroker/aziot/sdk/sas"
)

const (
	identitydAPI   = "?api-version=2022-08-01"
	e2eDeviceKey   = "dGhpcy1pcy1hLXRlc3Qta2V5LWZvci1kcHMtc2FzLXRva2Vucw=="
	e2eDeviceID    = "dev-e2e"
	e2eModuleUID   = 1001
	e2eModuleName  = "m1"
	identitydRetry = "\n[broker]\nprovisioning_retry_ms = 50\n"
)

type e2eIdentity struct {
	Type string `json:"type"`
	Spec struct {
		HubName     string `json:"hubName"`
		GatewayHost string `json:"gatewayHost"`
		DeviceID    string `json:"deviceId"`
		ModuleID    string `json:"moduleId"`
		GenID       string `json:"genId"`
		Auth        *struct {
			Type      string `json:"type"`
			KeyHandle string `json:"keyHandle"`
		} `json:"auth"`
	} `json:"spec"`
}

func identityOf(t *testing.T, r testenv.Reply) e2eIdentity {
	t.Helper()
	var id e2eIdentity
	if r.Status != 200 || json.Unmarshal(r.Body, &id) != nil || id.Spec.Auth == nil || id.Spec.Auth.KeyHandle == "" {
		t.Fatalf("no identity: %v", r)
	}
	return id
}

// With its defaults (source none) identityd answers as upstream: no device identity,
// provisioning info of the config, the empty trust bundle.
func TestIdentitydDevDefaults(t *testing.T) {
	dir := testenv.NewStateDir(t)
	d := testenv.StartDev(t, dir)
	sock := d.Socket("identityd")
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o666 {
		t.Fatalf("identityd socket: %v %v", st, err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "etc", "identityd", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("hostname = %q", host),
		fmt.Sprintf("homedir = %q", filepath.Join(dir, "lib", "identityd")),
		"[provisioning]\nsource = \"none\"",
		fmt.Sprintf("aziot_keyd = %q", "unix://"+d.Socket("keyd")),
		fmt.Sprintf("aziot_identityd = %q", "unix://"+sock),
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("default config lacks %s:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "[[principal]]") {
		t.Errorf("default config has principals:\n%s", b)
	}
	for _, c := range []struct{ method, path, body, want string }{
		{"POST", "/identities/device", `{"type":"aziot"}`, `400 {"message":"device identity not found"}`},
		{"GET", "/identities/identity", "", `400 {"message":"device identity not found"}`},
		{"GET", "/identities/modules", "", `400 {"message":"parameter \"type\" has an invalid value\ncaused by: missing parameter"}`},
		{"GET", "/identities/provisioning", "", `200 {"source":"none"}`},
		{"GET", "/trust-bundle", "", `200 {"certificate":""}`},
	} {
		r := testenv.Curl(t, -1, sock, c.method, c.path+identitydAPI, c.body)
		if got := fmt.Sprintf("%d %s", r.Status, strings.TrimSpace(string(r.Body))); got != c.want {
			t.Errorf("%s %s: got %s, want %s", c.method, c.path, got, c.want)
		}
	}
}

// hubEnv is the emulator's hub with one SAS device, and the env that makes the daemon
// trust its root.
type hubEnv struct {
	emu     *emulator.Emulator
	hub     string
	env     []string
	keyFile string
}

func startHub(t *testing.T) *hubEnv {
	t.Helper()
	e, err := emulator.Start(emulator.Config{DPSAddr: "off", ESTAddr: "off"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	hub := e.HubNames()[0]
	if _, err := e.CreateDevice(hub, e2eDeviceID, &emulator.Authentication{Type: "sas",
		SymmetricKey: &emulator.SymmetricKey{PrimaryKey: e2eDeviceKey, SecondaryKey: e2eDeviceKey}}); err != nil {
		t.Fatal(err)
	}
	root, err := e.RootCAPath()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(e2eDeviceKey)
	keyFile := filepath.Join(t.TempDir(), "device-id.key")
	if err := os.WriteFile(keyFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return &hubEnv{emu: e, hub: hub, keyFile: keyFile, env: []string{"SSL_CERT_FILE=" + root, "SSL_CERT_DIR=/nonexistent",
		"HTTPS_PROXY=", "https_proxy=", "HTTP_PROXY=", "http_proxy=", "NO_PROXY=", "no_proxy="}}
}

func (h *hubEnv) manualConfig(principals string) string {
	return fmt.Sprintf("[provisioning]\nsource = \"manual\"\niothub_hostname = %q\ndevice_id = %q\n\n[provisioning.authentication]\nmethod = \"sas\"\ndevice_id_pk = \"device-id\"\n%s%s",
		h.hub, e2eDeviceID, principals, identitydRetry)
}

// verify signs a SAS token through keyd with handle and checks the emulator accepts it
// with the registry's key.
func verifyHandle(t *testing.T, d *testenv.Daemon, handle, audience, key string) {
	t.Helper()
	kc := keys.New(d.Socket("keyd"))
	defer kc.Close()
	tok, err := sas.New(context.Background(), audience, time.Now().Add(time.Hour), "", func(ctx context.Context, data []byte) ([]byte, error) {
		return kc.SignHMAC(ctx, handle, data)
	})
	if err != nil {
		t.Fatalf("sign SAS token: %v", err)
	}
	pt, err := emulator.ParseSAS(tok)
	if err != nil {
		t.Fatal(err)
	}
	if !pt.VerifyAnyKey(key) {
		t.Fatalf("the emulator refuses the token for %s", audience)
	}
}

// A config.d file setting manual SAS provisioning replaces the default source none: the
// device identity is returned, and a module principal under another uid gets its module
// identity, created in the hub at start.
func TestIdentitydManualSAS(t *testing.T) {
	h := startHub(t)
	dir := testenv.NewStateDir(t)
	testenv.WriteConfig(t, dir, "keyd", "50-device.toml", fmt.Sprintf("[preloaded_keys]\ndevice-id = %q\n", "file://"+h.keyFile))
	testenv.WriteConfig(t, dir, "identityd", "50-manual.toml", h.manualConfig(
		fmt.Sprintf("\n[[principal]]\nuid = %d\nname = %q\nidtype = [\"module\"]\n", e2eModuleUID, e2eModuleName)))
	d := testenv.StartDev(t, dir, h.env...)
	sock := d.Socket("identityd")

	dev := identityOf(t, testenv.Curl(t, -1, sock, "POST", "/identities/device"+identitydAPI, `{"type":"aziot"}`))
	if dev.Type != "aziot" || dev.Spec.HubName != h.hub || dev.Spec.DeviceID != e2eDeviceID || dev.Spec.ModuleID != "" || dev.Spec.Auth.Type != "sas" {
		t.Fatalf("device identity %+v", dev)
	}
	verifyHandle(t, d, dev.Spec.Auth.KeyHandle, sas.DeviceAudience(h.hub, e2eDeviceID), e2eDeviceKey)
	if r := testenv.Curl(t, -1, sock, "GET", "/identities/provisioning"+identitydAPI, ""); r.Status != 200 || strings.TrimSpace(string(r.Body)) != `{"source":"manual","auth":"sas"}` {
		t.Fatalf("provisioning info: %v", r)
	}

	// The module was created at start (before "ready") for the module principal.
	_, mods, ok := h.emu.GetDevice(h.hub, e2eDeviceID)
	rm, found := mods[e2eModuleName]
	if !ok || !found {
		t.Fatalf("module %s not in the registry: %v", e2eModuleName, mods)
	}
	mod := identityOf(t, testenv.Curl(t, e2eModuleUID, sock, "GET", "/identities/identity"+identitydAPI, ""))
	if mod.Spec.DeviceID != e2eDeviceID || mod.Spec.ModuleID != e2eModuleName || mod.Spec.GenID != rm.GenerationID || mod.Spec.Auth.Type != "sas" {
		t.Fatalf("module identity %+v, registry %+v", mod, rm)
	}
	verifyHandle(t, d, mod.Spec.Auth.KeyHandle, sas.ModuleAudience(h.hub, e2eDeviceID, e2eModuleName), rm.Authentication.SymmetricKey.PrimaryKey)
	// Another uid without a principal is refused.
	if r := testenv.Curl(t, 1002, sock, "GET", "/identities/identity"+identitydAPI, ""); r.Status != 401 || message(t, r) != "authorization error" {
		t.Fatalf("uid without principal: %v", r)
	}

	// A config change is applied by the service's Reload: the new module principal gets
	// its module, created in the hub by reconciliation.
	testenv.WriteConfig(t, dir, "identityd", "60-m2.toml", "[[principal]]\nuid = 1002\nname = \"m2\"\nidtype = [\"module\"]\n")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(d.Stderr(), "msg=\"config reloaded\" service=identityd") {
		if time.Now().After(deadline) {
			t.Fatalf("identityd's config not reloaded:\n%s", d.Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	m2 := identityOf(t, testenv.Curl(t, 1002, sock, "GET", "/identities/identity"+identitydAPI, ""))
	_, mods, _ = h.emu.GetDevice(h.hub, e2eDeviceID)
	if rm2, ok := mods["m2"]; !ok || m2.Spec.ModuleID != "m2" || m2.Spec.GenID != rm2.GenerationID {
		t.Fatalf("module identity after reload %+v, registry %v", m2, mods)
	}
}

// A failing start-up (the device key is not in keyd yet, so reconciliation cannot sign
// for the hub) takes no service down under `aziotd dev`: "ready" comes, keyd answers,
// identityd answers with upstream's error for the missing key (a manual device record
// needs no hub, so it is not "device identity not found"), and identityd retries with
// back-off until the start-up succeeds once the key exists.
func TestIdentitydStartFailureRetries(t *testing.T) {
	h := startHub(t)
	dir := testenv.NewStateDir(t)
	testenv.WriteConfig(t, dir, "identityd", "50-manual.toml", h.manualConfig(""))
	d := testenv.StartDev(t, dir, h.env...)
	sock := d.Socket("identityd")
	if !d.Contains("start-up failed; serving meanwhile and retrying") {
		t.Fatalf("start-up did not fail:\n%s", d.Stderr())
	}
	if r := testenv.Curl(t, -1, sock, "POST", "/identities/device"+identitydAPI, `{"type":"aziot"}`); r.Status != 404 || !strings.HasPrefix(message(t, r), "Key client error\ncaused by: ") {
		t.Fatalf("before the key exists: %v", r)
	}
	raw, _ := base64.StdEncoding.DecodeString(e2eDeviceKey)
	kc := keys.New(d.Socket("keyd"))
	defer kc.Close()
	if _, err := kc.ImportKey(context.Background(), "device-id", raw, "sign"); err != nil {
		t.Fatalf("keyd after identityd's failed start: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !d.Contains("start-up retry succeeded") {
		if time.Now().After(deadline) {
			t.Fatalf("no successful retry 20 s after the key was imported:\n%s", d.Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	id := identityOf(t, testenv.Curl(t, -1, sock, "POST", "/identities/device"+identitydAPI, `{"type":"aziot"}`))
	if id.Spec.DeviceID != e2eDeviceID {
		t.Fatalf("device identity %+v", id)
	}
}

// As the single service aziot-identityd (its socket passed by systemd socket activation,
// as its packaged unit does), a failed start-up exits non-zero as upstream.
func TestIdentitydSingleServiceStartFailureExits(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatal("systemd-socket-activate is required (Debian package systemd)")
	}
	h := startHub(t)
	dir := testenv.NewStateDir(t)
	cfg := filepath.Join(dir, "config.toml")
	// Every path the service would take from the packaged defaults stays in the test dir;
	// keyd is absent, so reconciliation cannot sign for the hub.
	conf := fmt.Sprintf("hostname = \"h\"\nhomedir = %q\n\n[endpoints]\naziot_keyd = %q\n\n", filepath.Join(dir, "home"), "unix://"+filepath.Join(dir, "keyd.sock")) +
		h.manualConfig("") + fmt.Sprintf("policy_dir = %q\npolicy_bundle_dir = %q\npolicy_state_dir = %q\n",
		filepath.Join(dir, "policy.d"), filepath.Join(dir, "bundles"), filepath.Join(dir, "policy-state"))
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "aziot-identityd")
	if err := os.Symlink(testenv.Aziotd(t), link); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "identityd.sock")
	args := []string{"-l", sock, "-E", "AZIOT_IDENTITYD_CONFIG=" + cfg, "-E", "AZIOT_IDENTITYD_CONFIG_DIR=" + filepath.Join(dir, "none")}
	for _, e := range h.env {
		args = append(args, "-E", e)
	}
	cmd := exec.Command(activate, append(args, link)...)
	log := startActivated(t, cmd, sock)
	// The first connection starts the service; it fails its start-up and exits.
	testenv.CurlResult(-1, sock, "GET", "/trust-bundle"+identitydAPI, "")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(log.String(), "start identityd") {
			t.Fatalf("a failed start-up did not end aziot-identityd with an error (%v):\n%s", err, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("aziot-identityd still running 30 s after a failed start-up:\n%s", log.String())
	}
}

// As the single service aziot-identityd, a config error is fatal at start and names the
// file and the key.
func TestIdentitydConfigErrorIsFatal(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte("homedir = \"/nonexistent\"\n\n[provisioning]\nsource = \"none\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runIdentityd(t, dir, cfg)
	if err == nil {
		t.Fatalf("started with a config missing hostname:\n%s", out)
	}
	if !strings.Contains(string(out), cfg) || !strings.Contains(string(out), "hostname") {
		t.Fatalf("the error names neither the file nor the key:\n%s", out)
	}
}

// runIdentityd runs aziotd as aziot-identityd with the config at cfg.
func runIdentityd(t *testing.T, dir, cfg string, env ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(dir, "aziot-identityd")
	if err := os.Symlink(testenv.Aziotd(t), bin); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(append(os.Environ(), env...), "AZIOT_IDENTITYD_CONFIG="+cfg, "AZIOT_IDENTITYD_CONFIG_DIR="+filepath.Join(dir, "config.d"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}
