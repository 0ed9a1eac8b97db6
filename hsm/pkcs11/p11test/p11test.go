// Package p11test makes throwaway PKCS#11 tokens for tests: SoftHSM2 tokens in a temp
// directory, and tpm2-pkcs11 tokens on a per-test swtpm. Tests never skip: a missing
// tool fails them, naming the Debian package to install (.ci/run installs them all).
package p11test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotbroker/aziot/hsm/pkcs11/p11uri"
)

// SoftHSMLib is Debian's SoftHSM2 module.
const SoftHSMLib = "/usr/lib/softhsm/libsofthsm2.so"

// debianPackage names the Debian package that ships each tool or file the tests use.
var debianPackage = map[string]string{
	"softhsm2-util": "softhsm2",
	SoftHSMLib:      "softhsm2",
	"pkcs11-tool":   "opensc",
	"swtpm":         "swtpm swtpm-tools",
	tpmLibDefault:   "libtpm2-pkcs11-1",
}

// Require fails t when a tool or file is missing: a developer without SoftHSM2 must
// not see a green run that tested nothing.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		var err error
		if filepath.IsAbs(tool) {
			_, err = os.Stat(tool)
		} else {
			_, err = exec.LookPath(tool)
		}
		if err == nil {
			continue
		}
		pkg := debianPackage[tool]
		if pkg == "" {
			pkg = "the package that ships it"
		}
		t.Fatalf("%s is required by the PKCS#11 tests: %v; install it with apt-get install %s (as .ci/run does)", tool, err, pkg)
	}
}

// Token is one initialized token and how to reach it.
type Token struct {
	Lib   string
	Label string
	PIN   string // random per token, so that tests can grep logs for it
	SOPIN string
	// Env is what a process needs to see this token (SOFTHSM2_CONF, or the
	// tpm2-pkcs11 TCTI and store).
	Env []string
	Dir string
}

// URI is the token's pkcs11: URI with its PIN, as pkcs11_base_slot takes it.
func (tk *Token) URI() string {
	return (&p11uri.URI{Token: tk.Label, HasToken: true, PIN: tk.PIN, HasPIN: true}).Format()
}

// ObjectURI addresses one object of the token.
func (tk *Token) ObjectURI(label string) string {
	return (&p11uri.URI{Token: tk.Label, HasToken: true, Object: label, HasObject: true, PIN: tk.PIN, HasPIN: true}).Format()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	timer := time.AfterFunc(60*time.Second, func() {
		if cmd.Process != nil {
			cmd.Process.Kill()
		}
	})
	defer timer.Stop()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Tool runs pkcs11-tool on the token's module with its environment, logged in.
func (tk *Token) Tool(t testing.TB, args ...string) string {
	t.Helper()
	Require(t, "pkcs11-tool")
	all := append([]string{"--module", tk.Lib, "--token-label", tk.Label, "--login", "--pin", tk.PIN}, args...)
	return run(t, tk.Env, "pkcs11-tool", all...)
}

// SoftHSMConfig makes a SoftHSM2 configuration with an empty token directory in a
// test's temp dir and returns the SOFTHSM2_CONF environment entry.
func SoftHSMConfig(t testing.TB) (dir, env string) {
	t.Helper()
	Require(t, "softhsm2-util", SoftHSMLib)
	dir = t.TempDir()
	env, err := WriteSoftHSMConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, env
}

// WriteSoftHSMConfig writes a SoftHSM2 configuration whose tokens live under dir (for
// a TestMain, which has no testing.TB) and returns the SOFTHSM2_CONF entry. Always set
// SOFTHSM2_CONF: without it SoftHSM uses the machine's /etc/softhsm.
func WriteSoftHSMConfig(dir string) (string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tokens"), 0o700); err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", filepath.Join(dir, "tokens"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return "", err
	}
	return "SOFTHSM2_CONF=" + conf, nil
}

// SoftHSM makes a fresh SoftHSM2 configuration in a temp dir with one token.
func SoftHSM(t testing.TB) *Token {
	t.Helper()
	dir, env := SoftHSMConfig(t)
	return SoftHSMToken(t, dir, env, "aziot-"+randHex(4))
}

// SoftHSMToken initializes one more token labelled label in an existing configuration.
func SoftHSMToken(t testing.TB, dir, env, label string) *Token {
	t.Helper()
	tk := &Token{Lib: SoftHSMLib, Label: label, PIN: "pin" + randHex(6), SOPIN: "so" + randHex(6), Env: []string{env}, Dir: dir}
	tk.InitSoftHSM(t)
	return tk
}

// InitSoftHSM (re)creates the token: an existing token with the label is deleted
// first, so that this is a re-initialisation under anyone using it.
func (tk *Token) InitSoftHSM(t testing.TB) {
	t.Helper()
	del := exec.Command("softhsm2-util", "--delete-token", "--token", tk.Label)
	del.Env = append(os.Environ(), tk.Env...)
	del.Run() // fails when there is no such token yet
	run(t, tk.Env, "softhsm2-util", "--init-token", "--free", "--label", tk.Label, "--so-pin", tk.SOPIN, "--pin", tk.PIN)
}

// tpmLibDefault is where Debian puts the tpm2-pkcs11 module on amd64; TPMLib looks in
// every architecture's directory.
const tpmLibDefault = "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1"

// TPMLib finds Debian's tpm2-pkcs11 module.
func TPMLib(t testing.TB) string {
	t.Helper()
	m, _ := filepath.Glob("/usr/lib/*/libtpm2_pkcs11.so.1")
	if len(m) == 0 {
		Require(t, tpmLibDefault)
		return ""
	}
	return m[0]
}

// freePorts finds two consecutive free TCP ports on 127.0.0.1 (swtpm's server and
// control ports).
func freePorts(t testing.TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if p >= 65535 {
			continue
		}
		if l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1)); err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no two consecutive free ports")
	return 0
}

// TPM starts a swtpm for this test only (its own state dir and ports on 127.0.0.1,
// stopped at cleanup) and initializes a tpm2-pkcs11 token on it through PKCS#11 itself
// (C_InitToken, C_InitPIN), which needs no resource manager (docs/hsm.md).
func TPM(t testing.TB) *Token {
	t.Helper()
	Require(t, "swtpm", "pkcs11-tool")
	lib := TPMLib(t)
	dir := t.TempDir()
	state, store := filepath.Join(dir, "tpm"), filepath.Join(dir, "store")
	for _, d := range []string{state, store} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var port int
	for attempt := 0; ; attempt++ {
		port = freePorts(t)
		cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
			"--flags", "not-need-init,startup-clear",
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if waitPort(port, exited) {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			break
		}
		cmd.Process.Kill()
		<-exited
		if attempt == 4 {
			t.Fatalf("swtpm did not start: %s", stderr.String())
		}
	}
	tk := &Token{
		Lib: lib, Label: "aziot-tpm", PIN: "pin" + randHex(6), SOPIN: "so" + randHex(6), Dir: dir,
		Env: []string{
			fmt.Sprintf("TPM2_PKCS11_TCTI=swtpm:host=127.0.0.1,port=%d", port),
			"TPM2_PKCS11_STORE=" + store,
			"TPM2_PKCS11_LOG_LEVEL=0",
		},
	}
	run(t, tk.Env, "pkcs11-tool", "--module", lib, "--slot-index", "0", "--init-token", "--label", tk.Label, "--so-pin", tk.SOPIN)
	run(t, tk.Env, "pkcs11-tool", "--module", lib, "--token-label", tk.Label, "--login", "--login-type", "so", "--so-pin", tk.SOPIN, "--init-pin", "--pin", tk.PIN)
	return tk
}

// waitPort waits up to 5 s for a listener on port, or for the process to exit.
func waitPort(port int, exited <-chan struct{}) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
