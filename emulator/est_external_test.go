package emulator

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestESTWithCurlAndOpenSSL runs an RFC 7030 client scripted with curl and openssl.
func TestESTWithCurlAndOpenSSL(t *testing.T) {
	requireTool(t, "curl")
	requireTool(t, "openssl")
	e := startEmu(t, Config{})
	dir := t.TempDir()
	root, err := e.RootCAPath()
	if err != nil {
		t.Fatal(err)
	}
	bc, bk, err := e.IssueBootstrapCert("curl-bootstrap", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "boot.pem"), CertPEM(bc))
	write(t, filepath.Join(dir, "boot.key"), bk)
	work := filepath.Join(dir, "work")
	_ = os.Mkdir(work, 0o700)
	script, _ := filepath.Abs("testdata/est-rfc7030.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Env = append(os.Environ(), "EST_BASE="+e.ESTURL()+"/.well-known/est", "ROOT_CA="+root,
		"BOOT_CERT="+filepath.Join(dir, "boot.pem"), "BOOT_KEY="+filepath.Join(dir, "boot.key"), "WORK="+work)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "all steps passed") {
		t.Fatalf("curl/openssl EST script: %v\n%s", err, out)
	}
	ops := map[string]bool{}
	for _, le := range e.Log() {
		if le.Status == 200 {
			ops[le.Route] = true
		}
	}
	if !ops["cacerts"] || !ops["simpleenroll"] || !ops["simplereenroll"] {
		t.Fatalf("emulator did not see every operation succeed: %v", ops)
	}
}

// TestESTWithGlobalsignClient uses the estclient of github.com/globalsign/est v1.0.6
// (installed from tools/est) against the emulator.
func TestESTWithGlobalsignClient(t *testing.T) {
	bin := requireTool(t, "estclient")
	requireTool(t, "openssl")
	e := startEmu(t, Config{ESTLabels: []ESTLabelConfig{
		{Users: map[string]string{"estuser": "estpass"}},
		{Label: "devices", Users: map[string]string{"estuser": "estpass"}},
	}})
	dir := t.TempDir()
	root, _ := e.RootCAPath()
	u, _ := url.Parse(e.ESTURL())
	server := "127.0.0.1:" + u.Port()
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("estclient %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", filepath.Join(dir, "dev.key")).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v %s", err, out)
	}
	run("cacerts", "-server", server, "-explicit", root, "-out", "cacerts.pem")
	cas, err := ParseCertsPEM(read(t, filepath.Join(dir, "cacerts.pem")))
	if err != nil || !cas[0].Equal(e.ESTCA("").Cert) {
		t.Fatalf("cacerts: %v", err)
	}
	run("enroll", "-server", server, "-explicit", root, "-user", "estuser", "-pass", "estpass", "-key", "dev.key", "-cn", "gs-device", "-out", "cert.pem")
	certs, err := ParseCertsPEM(read(t, filepath.Join(dir, "cert.pem")))
	if err != nil || certs[0].Subject.CommonName != "gs-device" {
		t.Fatalf("enroll: %v", err)
	}
	run("reenroll", "-server", server, "-explicit", root, "-certs", "cert.pem", "-key", "dev.key", "-out", "cert2.pem")
	renewed, err := ParseCertsPEM(read(t, filepath.Join(dir, "cert2.pem")))
	if err != nil || renewed[0].Subject.CommonName != "gs-device" || renewed[0].SerialNumber.Cmp(certs[0].SerialNumber) == 0 {
		t.Fatalf("reenroll: %v", err)
	}
	// Additional path segment (label).
	run("enroll", "-server", server, "-aps", "devices", "-explicit", root, "-user", "estuser", "-pass", "estpass", "-key", "dev.key", "-cn", "gs-labelled", "-out", "cert3.pem")
	labelled, _ := ParseCertsPEM(read(t, filepath.Join(dir, "cert3.pem")))
	if err := labelled[0].CheckSignatureFrom(e.ESTCA("devices").Cert); err != nil {
		t.Fatalf("labelled enrollment not issued by the label's CA: %v", err)
	}
}

func write(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
