package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"flag"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixture is a healthy device in a temp dir: configs, cert and key files, fake keyd
// and certd on Unix sockets, a local TLS "hub", a local SNTP server.
type fixture struct {
	t       *testing.T
	a       *app
	dir     string
	files   map[string]string // relative path under Etc → content
	certPEM string
	keyPub  any // public key keyd reports for device-id
	args    []string
	noKeyd  bool
	noCertd bool
	down    map[string]bool // services whose socket is not served
}

func newFixture(t *testing.T) *fixture {
	a, _, _ := testApp(t)
	dir := filepath.Dir(a.paths.Etc)
	// Make the temp dirs traversable by the service users, as /etc and /var are.
	for p := dir; p != filepath.Dir(p); p = filepath.Dir(p) {
		if strings.HasPrefix(p, os.TempDir()) && p != os.TempDir() {
			os.Chmod(p, 0o755)
		}
	}
	f := &fixture{t: t, a: a, dir: dir, down: map[string]bool{}}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.keyPub = &key.PublicKey
	f.certPEM = makeCert(t, key, testNow.Add(-24*time.Hour), testNow.Add(365*24*time.Hour))
	certPath := filepath.Join(dir, "device-id.pem")
	keyPath := filepath.Join(dir, "device-id.key.pem")
	f.files = map[string]string{
		"config.toml":                  "# super-config\n",
		"keyd/config.d/00-super.toml":  "[aziot_keys]\nhomedir_path = \"/var/lib/aziot/keyd\"\n\n[preloaded_keys]\ndevice-id = \"file://" + keyPath + "\"\n",
		"certd/config.d/00-super.toml": "homedir_path = \"/var/lib/aziot/certd\"\n\n[preloaded_certs]\ndevice-id = \"file://" + certPath + "\"\n",
		"identityd/config.d/00-super.toml": `hostname = "my-device"
homedir = "/var/lib/aziot/identityd"

[provisioning]
source = "manual"
iothub_hostname = "127.0.0.1"
device_id = "dev"

[provisioning.authentication]
method = "x509"
identity_cert = "device-id"
identity_pk = "device-id"
`,
		"tpmd/config.d/00-super.toml": "",
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o644)
	os.WriteFile(certPath, []byte(f.certPEM), 0o644)

	// Local TLS server standing in for the hub (and DPS) on every port.
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p := srv.Listener.Addr().(*net.TCPAddr).Port
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	a.net = netSettings{AMQPPort: p, HTTPSPort: p, MQTTPort: p, DPSPort: p, Roots: pool}
	f.args = []string{"--expected-aziot-version", version, "--ntp-server", startSNTP(t, 0)}
	return f
}

func makeCert(t *testing.T, key *ecdsa.PrivateKey, notBefore, notAfter time.Time) string {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dev"}, NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// startSNTP answers SNTP queries with testNow+skew.
func startSNTP(t *testing.T, skew time.Duration) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 48)
		for {
			_, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			resp := make([]byte, 48)
			resp[0] = 0x1c
			ts := testNow.Add(skew)
			sec := uint32(ts.Unix() + 2208988800)
			binary.BigEndian.PutUint32(resp[32:], sec)
			binary.BigEndian.PutUint32(resp[40:], sec)
			pc.WriteTo(resp, addr)
		}
	}()
	return pc.LocalAddr().String()
}

// serveUnix runs an HTTP handler on a Unix socket in the run dir.
func (f *fixture) serveUnix(name string, h http.Handler) {
	os.MkdirAll(f.a.paths.Run, 0o755)
	l, err := net.Listen("unix", filepath.Join(f.a.paths.Run, name+".sock"))
	if err != nil {
		f.t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	f.t.Cleanup(func() { srv.Close() })
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// run writes the files, starts the services and runs check with extra args.
func (f *fixture) run(extra ...string) (int, string) {
	for rel, content := range f.files {
		p := filepath.Join(f.a.paths.Etc, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o600)
	}
	old := testNow.Add(-time.Hour)
	os.Chtimes(filepath.Join(f.a.paths.Etc, "config.toml"), old, old)
	if !f.noKeyd {
		f.serveUnix("keyd", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.HasPrefix(r.URL.Path, "/keypair/"):
				writeJSON(w, map[string]string{"keyHandle": strings.TrimPrefix(r.URL.Path, "/keypair/")})
			case strings.HasPrefix(r.URL.Path, "/parameters/"):
				writeJSON(w, map[string]string{"value": keyParam(f.keyPub, strings.TrimPrefix(r.URL.Path, "/parameters/"))})
			default:
				http.NotFound(w, r)
			}
		}))
	}
	if !f.noCertd {
		f.serveUnix("certd", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/certificates/device-id" {
				writeJSON(w, map[string]string{"pem": f.certPEM})
				return
			}
			http.NotFound(w, r)
		}))
	}
	for _, svc := range []string{"identityd", "tpmd"} {
		if !f.down[svc] {
			f.serveUnix(svc, http.NotFoundHandler())
		}
	}
	out := &strings.Builder{}
	f.a.stdout = out
	code := run(f.a, append(append([]string{"check"}, f.args...), extra...))
	return code, out.String()
}

// oidP256 is the DER curve OID keyd answers for P-256 keys (api-keys.md §5.7).
var oidP256 = []byte{0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07}

func keyParam(pub any, name string) string {
	b64 := base64.StdEncoding.EncodeToString
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch name {
		case "algorithm":
			return "ECDSA"
		case "ec-curve-oid":
			if k.Curve == elliptic.P256() {
				return b64(oidP256)
			}
			return b64([]byte{0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22})
		case "ec-point":
			return b64(elliptic.MarshalCompressed(k.Curve, k.X, k.Y))
		}
	case *rsa.PublicKey:
		switch name {
		case "algorithm":
			return "RSA"
		case "rsa-modulus":
			return b64(k.N.Bytes())
		case "rsa-exponent":
			return b64(big.NewInt(int64(k.E)).Bytes())
		}
	}
	return ""
}

func results(t *testing.T, out string) map[string]checkResult {
	t.Helper()
	var doc struct {
		Checks map[string]struct {
			Result checkResult `json:"result"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	r := map[string]checkResult{}
	for id, c := range doc.Checks {
		r[id] = c.Result
	}
	return r
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		os.WriteFile(p, []byte(got), 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update to accept):\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

// A healthy manual X.509 device passes every check that applies, in all formats.
func TestCheckHealthyGolden(t *testing.T) {
	for _, format := range []string{"text", "json", "json-stream"} {
		t.Run(format, func(t *testing.T) {
			f := newFixture(t)
			code, out := f.run("-o", format)
			if code != 0 {
				t.Errorf("exit %d\n%s", code, out)
			}
			out = strings.ReplaceAll(out, strconv.Itoa(f.a.net.AMQPPort), "PORT")
			golden(t, "check-healthy."+format, out)
		})
	}
}

// A device with failures, in all formats, verbose and not.
func TestCheckFailingGolden(t *testing.T) {
	for _, args := range [][]string{{"-o", "text"}, {"-o", "text", "-v"}, {"-o", "json"}, {"-o", "json-stream"}, {"-o", "text", "--warnings-as-errors"}} {
		name := "check-failing." + strings.Join(args[1:], "")
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.noCertd = true
			f.files["identityd/config.d/00-super.toml"] = strings.Replace(f.files["identityd/config.d/00-super.toml"], `"my-device"`, `"other-host"`, 1)
			f.args = append(f.args[:0], "--expected-aziot-version", "1.6.9", "--ntp-server", startSNTP(t, 0))
			code, out := f.run(args...)
			if code != 1 {
				t.Errorf("exit %d", code)
			}
			out = strings.ReplaceAll(out, f.dir, "DIR")
			out = strings.ReplaceAll(out, strconv.Itoa(f.a.net.AMQPPort), "PORT")
			golden(t, name, out)
		})
	}
}

func TestCheckList(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		a, stdout, _ := testApp(t)
		if code := run(a, []string{"check-list", "-o", format}); code != 0 {
			t.Fatalf("exit %d", code)
		}
		golden(t, "check-list."+format, stdout.String())
	}
	a, _, _ := testApp(t)
	if code := run(a, []string{"check-list", "-o", "json-stream"}); code != 2 {
		t.Errorf("json-stream accepted: %d", code)
	}
}

// Every check has a passing and a failing case.
func TestEachCheck(t *testing.T) {
	dps := func(f *fixture, method string) {
		f.files["identityd/config.d/00-super.toml"] = `hostname = "my-device"
homedir = "/var/lib/aziot/identityd"

[provisioning]
source = "dps"
global_endpoint = "https://127.0.0.1/"
scope_id = "s"

[provisioning.attestation]
method = "` + method + `"
registration_id = "r"
identity_cert = "device-id"
identity_pk = "device-id"
`
	}
	replaceKeyCert := func(f *fixture, notBefore, notAfter time.Time) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		os.WriteFile(filepath.Join(f.dir, "device-id.pem"), []byte(makeCert(t, key, notBefore, notAfter)), 0o644)
	}
	cases := []struct {
		id, want string
		setup    func(f *fixture)
	}{
		{"keyd-config-well-formed", "ok", nil},
		{"keyd-config-well-formed", "error", func(f *fixture) { f.files["keyd/config.d/00-super.toml"] = "max_requests = \n" }},
		{"keyd-config-well-formed", "error", func(f *fixture) { f.files["keyd/config.d/01.toml"] = "[aziot_keys]\nbogus = \"x\"\n" }},
		{"certd-config-well-formed", "ok", nil},
		{"certd-config-well-formed", "error", func(f *fixture) { f.files["certd/config.d/00-super.toml"] = "[preloaded_certs]\n" }},
		{"tpmd-config-well-formed", "ok", nil},
		{"tpmd-config-well-formed", "error", func(f *fixture) { f.files["tpmd/config.d/00-super.toml"] = "auth_key_index = 0x900000\n" }},
		{"identityd-config-well-formed", "ok", nil},
		{"identityd-config-well-formed", "error", func(f *fixture) { f.files["identityd/config.d/00-super.toml"] = "hostname = \"h\"\n" }},
		{"configs-up-to-date", "ok", nil},
		{"configs-up-to-date", "ignored", func(f *fixture) { delete(f.files, "config.toml") }},
		{"configs-up-to-date", "warning", func(f *fixture) { delete(f.files, "tpmd/config.d/00-super.toml") }},
		{"hostname", "ok", nil},
		{"hostname", "ok", func(f *fixture) { f.a.hostname = func() (string, error) { return "MY-DEVICE", nil } }},
		{"hostname", "error", func(f *fixture) { f.a.hostname = func() (string, error) { return "elsewhere", nil } }},
		{"hostname", "warning", func(f *fixture) {
			f.a.hostname = func() (string, error) { return "my_device", nil }
			f.files["identityd/config.d/00-super.toml"] = strings.Replace(f.files["identityd/config.d/00-super.toml"], `"my-device"`, `"my_device"`, 1)
		}},
		{"aziot-version", "ok", nil},
		{"aziot-version", "warning", func(f *fixture) { f.args[1] = "1.7.0" }},
		{"aziot-version", "ok", func(f *fixture) {
			f.args = f.args[2:]
			f.a.latestVersions = func(context.Context, string) ([]byte, error) {
				return []byte(`{"channels":[{"name":"stable","products":[{"id":"aziot-edge","components":[{"name":"aziot-identity-service","version":"` + version + `"}]}]}]}`), nil
			}
		}},
		{"host-local-time", "ok", nil},
		{"host-local-time", "warning", func(f *fixture) { f.args[3] = startSNTP(t, time.Minute) }},
		{"identity-certificate-expiry", "ok", nil},
		{"identity-certificate-expiry", "error", func(f *fixture) { replaceKeyCert(f, testNow.Add(-48*time.Hour), testNow.Add(-time.Hour)) }},
		{"identity-certificate-expiry", "warning", func(f *fixture) { replaceKeyCert(f, testNow.Add(-48*time.Hour), testNow.Add(time.Hour)) }},
		{"identity-certificate-expiry", "error", func(f *fixture) { os.Chmod(filepath.Join(f.dir, "device-id.pem"), 0o600) }},
		{"identity-certificate-expiry", "ignored", func(f *fixture) { dps(f, "tpm") }},
		{"est-identity-and-bootstrap-certificate-expiry", "ignored", nil},
		{"est-identity-and-bootstrap-certificate-expiry", "ok", func(f *fixture) {
			f.files["certd/config.d/01.toml"] = "[cert_issuance.est]\nidentity_cert = \"device-id\"\n"
		}},
		{"est-identity-and-bootstrap-certificate-expiry", "error", func(f *fixture) {
			f.files["certd/config.d/01.toml"] = "[cert_issuance.est]\nidentity_cert = \"est-id\"\n"
		}},
		{"local-ca-certificate-expiry", "ignored", nil},
		{"local-ca-certificate-expiry", "ok", func(f *fixture) {
			f.files["certd/config.d/01.toml"] = "[cert_issuance.local_ca]\ncert = \"local-ca\"\npk = \"local-ca\"\n[cert_issuance.local-ca]\nmethod = \"self_signed\"\n"
		}},
		{"local-ca-certificate-expiry", "error", func(f *fixture) {
			f.files["certd/config.d/01.toml"] = "[cert_issuance.local_ca]\ncert = \"local-ca\"\npk = \"local-ca\"\n"
		}},
		{"certs-preloaded", "ok", nil},
		{"certs-preloaded", "error", func(f *fixture) {
			f.files["certd/config.d/01.toml"] = "[preloaded_certs]\nother = \"https://example/x.pem\"\n"
		}},
		{"keyd-running", "ok", nil},
		{"keyd-running", "error", func(f *fixture) { f.noKeyd = true }},
		{"certd-running", "ok", nil},
		{"certd-running", "error", func(f *fixture) { f.noCertd = true }},
		{"tpmd-running", "ignored", nil},
		{"tpmd-running", "ok", func(f *fixture) { dps(f, "tpm"); f.args = append(f.args, "--iothub-hostname", "127.0.0.1") }},
		{"tpmd-running", "error", func(f *fixture) { dps(f, "tpm"); f.down["tpmd"] = true }},
		{"identityd-running", "ok", nil},
		{"identityd-running", "error", func(f *fixture) { f.down["identityd"] = true }},
		{"certs-read", "ok", nil},
		{"certs-read", "skipped", func(f *fixture) { f.noCertd = true }},
		{"certs-read", "error", func(f *fixture) {
			f.files["certd/config.d/01.toml"] = "[preloaded_certs]\nmissing = \"file:///nonexistent.pem\"\n"
			f.args = append(f.args, "--dont-run", "certs-preloaded")
		}},
		{"key-pairs-read", "ok", nil},
		{"key-pairs-read", "skipped", func(f *fixture) { f.noKeyd = true }},
		{"key-pairs-read", "warning", func(f *fixture) {
			k, _ := rsa.GenerateKey(rand.Reader, 1024)
			f.keyPub = &k.PublicKey
		}},
		{"key-pairs-read", "error", func(f *fixture) { os.Chmod(filepath.Join(f.dir, "device-id.key.pem"), 0o600) }},
		{"est-server-https", "ok", nil},
		{"est-server-https", "warning", func(f *fixture) {
			f.files["certd/config.d/01.toml"] = "[cert_issuance.est.urls]\ndefault = \"http://est.example/.well-known/est\"\n"
		}},
		{"certs-match-private-keys", "ok", nil},
		{"certs-match-private-keys", "error", func(f *fixture) {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			f.keyPub = &k.PublicKey
		}},
		{"certs-match-private-keys", "skipped", func(f *fixture) { f.noKeyd = true }},
		{"host-connect-iothub-amqp", "ok", nil},
		{"host-connect-iothub-amqp", "error", func(f *fixture) { f.a.net.AMQPPort = closedPort(t) }},
		{"host-connect-iothub-amqp", "error", func(f *fixture) { f.a.net.Roots = x509.NewCertPool() }},
		{"host-connect-iothub-amqp", "warning", func(f *fixture) { dps(f, "tpm") }},
		{"host-connect-iothub-amqp", "ok", func(f *fixture) {
			// A DPS device whose previous provisioning was manual: the hub comes from prev_state.
			dps(f, "tpm")
			os.MkdirAll(filepath.Join(f.a.paths.Lib, "identityd"), 0o700)
			os.WriteFile(filepath.Join(f.a.paths.Lib, "identityd", "prev_state"), []byte(
				"hostname = \"my-device\"\nhomedir = \"/h\"\n[provisioning]\nsource = \"manual\"\niothub_hostname = \"127.0.0.1\"\ndevice_id = \"d\"\n"), 0o600)
		}},
		{"host-connect-iothub-amqp", "ignored", func(f *fixture) {
			f.files["identityd/config.d/00-super.toml"] = "hostname = \"my-device\"\nhomedir = \"/h\"\n[provisioning]\nsource = \"none\"\n"
		}},
		{"host-connect-iothub-https", "ok", nil},
		{"host-connect-iothub-https", "error", func(f *fixture) { f.a.net.HTTPSPort = closedPort(t) }},
		{"host-connect-iothub-https", "ok", func(f *fixture) { f.args = append(f.args, "--proxy-uri", startProxy(t)) }},
		{"host-connect-iothub-mqtt", "ok", nil},
		{"host-connect-iothub-mqtt", "error", func(f *fixture) { f.args = append(f.args, "--iothub-hostname", "localhost.invalid") }},
		{"host-connect-dps-endpoint", "ignored", nil},
		{"host-connect-dps-endpoint", "ok", func(f *fixture) { dps(f, "x509") }},
		{"host-connect-dps-endpoint", "error", func(f *fixture) { dps(f, "x509"); f.a.net.DPSPort = closedPort(t) }},
	}
	covered := map[string]map[string]bool{}
	for i, tc := range cases {
		t.Run(strconv.Itoa(i)+"-"+tc.id+"-"+tc.want, func(t *testing.T) {
			f := newFixture(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			_, out := f.run("-o", "json")
			got := results(t, out)[tc.id]
			if got.Result != tc.want {
				t.Errorf("%s: %+v, want %s", tc.id, got, tc.want)
			}
		})
		if covered[tc.id] == nil {
			covered[tc.id] = map[string]bool{}
		}
		covered[tc.id][tc.want] = true
	}
	for _, s := range checkSections() {
		for _, c := range s.checks {
			pass := covered[c.id]["ok"]
			fail := covered[c.id]["error"] || covered[c.id]["warning"] || covered[c.id]["fatal"]
			if !pass || !fail {
				t.Errorf("check %s lacks a passing or a failing case", c.id)
			}
		}
	}
}

func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p
}

// startProxy is a minimal HTTP CONNECT proxy on loopback.
func startProxy(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufioReader(c))
				if err != nil || req.Method != "CONNECT" {
					return
				}
				up, err := net.Dial("tcp", req.Host)
				if err != nil {
					c.Write([]byte("HTTP/1.1 502 Bad Gateway\r\n\r\n"))
					return
				}
				defer up.Close()
				c.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"))
				go copyConn(up, c)
				copyConn(c, up)
			}()
		}
	}()
	return "http://" + l.Addr().String()
}
