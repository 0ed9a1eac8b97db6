package emulator

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// swtpm is one software TPM for one test, driven through tpm2-tools.
type swtpm struct {
	t   *testing.T
	dir string
	env []string
}

func freePortPair(t *testing.T) int {
	for i := 0; i < 50; i++ {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			continue
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l1.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no free port pair for swtpm")
	return 0
}

func startSWTPM(t *testing.T) *swtpm {
	t.Helper()
	bin := requireTool(t, "swtpm")
	requireTool(t, "tpm2_createek")
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	port := freePortPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "socket", "--tpm2", "--tpmstate", "dir="+state, "--flags", "not-need-init,startup-clear",
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1))
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	s := &swtpm{t: t, dir: dir, env: append(os.Environ(), fmt.Sprintf("TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=%d", port))}
	for i := 0; i < 50; i++ {
		if _, err := s.try("tpm2_getrandom", "4"); err == nil {
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("swtpm did not come up")
	return nil
}

func (s *swtpm) try(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.Dir, c.Env = s.dir, s.env
	return c.CombinedOutput()
}

// run executes one tpm2-tools command, then flushes transient objects: the tools save
// contexts to files but leave the objects loaded, and swtpm has only three slots.
func (s *swtpm) run(args ...string) {
	s.t.Helper()
	if out, err := s.try(args...); err != nil {
		s.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if out, err := s.try("tpm2_flushcontext", "-t"); err != nil {
		s.t.Fatalf("flush transient objects: %v\n%s", err, out)
	}
}

func (s *swtpm) read(name string) []byte {
	s.t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

func (s *swtpm) write(name string, b []byte) {
	s.t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, name), b, 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// importBlob runs ActivateCredential and Import on a DPS authenticationKey blob and loads
// the HMAC key as name.ctx, as a device does (cloud-dps.md §6).
func (s *swtpm) importBlob(b64, name string) {
	s.t.Helper()
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		s.t.Fatal(err)
	}
	parts, err := SplitTPMAuthenticationKey(blob)
	if err != nil {
		s.t.Fatal(err)
	}
	// tpm2-tools' credential file: magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, secret.
	cred := binary.BigEndian.AppendUint32(nil, 0xBADCC0DE)
	cred = binary.BigEndian.AppendUint32(cred, 1)
	cred = append(append(cred, parts[0]...), parts[1]...)
	s.write(name+".cred", cred)
	s.write(name+".dup", parts[2])
	s.write(name+".seed", parts[3])
	s.write(name+".pub", parts[4])
	s.run("tpm2_startauthsession", "--policy-session", "-S", name+".session")
	s.run("tpm2_policysecret", "-S", name+".session", "-c", "e")
	s.run("tpm2_activatecredential", "-c", "srk.ctx", "-C", "ek.ctx", "-i", name+".cred", "-o", name+".inner", "-P", "session:"+name+".session")
	s.run("tpm2_flushcontext", name+".session")
	s.run("tpm2_import", "-C", "srk.ctx", "-u", name+".pub", "-i", name+".dup", "-s", name+".seed", "-k", name+".inner", "-r", name+".priv")
	s.run("tpm2_load", "-C", "srk.ctx", "-u", name+".pub", "-r", name+".priv", "-c", name+".ctx")
}

// hmac has the TPM compute HMAC-SHA256 with a loaded key.
func (s *swtpm) hmac(keyCtx, msg string) string {
	s.t.Helper()
	s.write("msg.bin", []byte(msg))
	s.run("tpm2_hmac", "-c", keyCtx, "-g", "sha256", "-o", "mac.bin", "msg.bin")
	return base64.StdEncoding.EncodeToString(s.read("mac.bin"))
}

// TestTPMRoundTripWithSWTPM: tpm2-tools on a per-test swtpm reads the EK and SRK, the
// emulator answers round 1 with its wrapped key, the TPM activates and imports it, and a
// TPM-made HMAC signs the round-2 token; the hub key delivered on assignment is imported
// the same way and signs a hub token the emulator accepts.
func TestTPMRoundTripWithSWTPM(t *testing.T) {
	s := startSWTPM(t)
	s.run("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
	s.run("tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "rsa2048:aes128cfb", "-c", "srk.ctx",
		"-a", "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda")
	s.run("tpm2_readpublic", "-c", "srk.ctx", "-o", "srk.pub")
	ek := base64.StdEncoding.EncodeToString(s.read("ek.pub"))
	srk := base64.StdEncoding.EncodeToString(s.read("srk.pub"))

	e := startEmu(t, Config{})
	hub := e.HubNames()[0]
	if err := e.AddEnrollment(Enrollment{Attestation: AttestTPM, ID: "tpm-device-01", EndorsementKey: ek}); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, e, nil, nil)
	url := registerURL(e, testScope, "tpm-device-01", "2021-06-01")
	round1 := []byte(`{"registrationId":"tpm-device-01","tpm":{"endorsementKey":"` + ek + `","storageRootKey":"` + srk + `"}}`)
	r := c.do("PUT", url, map[string]string{"Content-Type": "application/json"}, round1)
	wantStatus(t, r, 401)
	ch := r.json(t)
	if ch["keyName"] != "registration" || ch["authenticationKey"] == nil {
		t.Fatalf("challenge %v", ch)
	}
	// A different EK gets a plain 401 without a challenge.
	other := []byte(`{"registrationId":"tpm-device-01","tpm":{"endorsementKey":"` + srk + `","storageRootKey":"` + srk + `"}}`)
	if m := c.do("PUT", url, nil, other).json(t); m["authenticationKey"] != nil {
		t.Fatal("EK mismatch must not get a challenge")
	}
	// The challenge of the first round is still the one in force: re-ask for it.
	r = c.do("PUT", url, map[string]string{"Content-Type": "application/json"}, round1)
	ch = r.json(t)
	s.importBlob(ch["authenticationKey"].(string), "dps")

	sr := strings.ToLower(testScope + "/registrations/tpm-device-01")
	se := itoa(int(e.Now().Add(time.Minute).Unix()))
	sig := s.hmac("dps.ctx", sr+"\n"+se)
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(sig) + "&se=" + se + "&skn=registration"
	// Round 2 without `tpm` (upstream) is accepted.
	rs := regState(t, register(t, c, e, "tpm-device-01", tok, regBody("tpm-device-01")))
	tpmState, _ := rs["tpm"].(map[string]any)
	if rs["status"] != "assigned" || tpmState == nil {
		t.Fatalf("TPM registration: %v", rs)
	}
	for _, le := range e.Log() {
		if le.Route == "register" && le.Auth != nil && le.Auth.Verdict == "ok" && strings.Contains(le.Body, `"tpm"`) {
			t.Fatal("round 2 should have been sent without tpm")
		}
	}
	// The C SDK repeats `tpm` in round 2: accepted as well.
	if rs := regState(t, register(t, c, e, "tpm-device-01", tok, round1)); rs["status"] != "assigned" {
		t.Fatalf("round 2 with tpm: %v", rs)
	}
	tpmState = regState(t, register(t, c, e, "tpm-device-01", tok, regBody("tpm-device-01")))["tpm"].(map[string]any)
	// The hub key arrives wrapped the same way; a TPM HMAC with it authenticates to the hub.
	s.importBlob(tpmState["authenticationKey"].(string), "hub")
	hsr := strings.ToLower(hub + "/devices/tpm-device-01")
	hse := itoa(int(e.Now().Add(time.Minute).Unix()))
	hsig := s.hmac("hub.ctx", hsr+"\n"+hse)
	htok := "SharedAccessSignature sr=" + hsr + "&sig=" + strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(hsig) + "&se=" + hse
	wantStatus(t, c.do("GET", e.HubURL(hub)+"/devices/tpm-device-01/modules"+hubAPI, map[string]string{"Authorization": htok}, nil), 200)
	// A token signed with the round-1 (DPS) key does not open the hub.
	bad := "SharedAccessSignature sr=" + hsr + "&sig=" + strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(s.hmac("dps.ctx", hsr+"\n"+hse)) + "&se=" + hse
	wantStatus(t, c.do("GET", e.HubURL(hub)+"/devices/tpm-device-01/modules"+hubAPI, map[string]string{"Authorization": bad}, nil), 401)
}
