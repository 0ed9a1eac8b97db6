package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/sdk/certs"
	"github.com/iotbroker/aziot/sdk/keys"
)

// certdEnv is a running aziotd dev with certd clients: the sdk through the
// OpenAPI-validating proxy, keyd directly, and curl on the raw socket.
type certdEnv struct {
	dir    string
	daemon *testenv.Daemon
	certs  *certs.Client
	keys   *keys.Client
	proxy  *testenv.ValidatingProxy
}

func (e *certdEnv) curl(t *testing.T, uid int, method, path, body string, headers ...string) testenv.Reply {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	if !strings.Contains(path, "api-version=") {
		path += sep + "api-version=2020-09-01"
	}
	return testenv.Curl(t, uid, e.daemon.Socket("certd"), method, path, body, headers...)
}

// certdOK fails the test on error, so that calls read certdOK[string](t)(c.Get(...)).
func certdOK[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// wantReply checks a curl answer: status and the upstream error message (or body).
func wantReply(t *testing.T, r testenv.Reply, status int, message string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("want %d %q, got %v", status, message, r)
	}
	if status == 204 {
		if len(r.Body) != 0 {
			t.Fatalf("204 with a body: %q", r.Body)
		}
		return
	}
	if message == "" {
		return
	}
	var m struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("error body is not JSON: %q", r.Body)
	}
	if m.Message != message {
		t.Fatalf("want %d %q, got %d %q", status, message, r.Status, m.Message)
	}
	if want, _ := json.Marshal(map[string]string{"message": message}); !bytes.Equal(r.Body, want) {
		t.Fatalf("error body %q has more than the message", r.Body)
	}
}

// makeCSR builds a PEM CSR over signer's public key with the given extensions.
func makeCSR(t testing.TB, signer crypto.Signer, subject pkix.Name, exts ...pkix.Extension) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject, ExtraExtensions: exts}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func marshalExt(t testing.TB, oid asn1.ObjectIdentifier, critical bool, v any) pkix.Extension {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oid, Critical: critical, Value: b}
}

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidSKID             = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidAKID             = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCustom           = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 99, 1}
)

// caExtensions are basicConstraints CA:TRUE (critical) and keyUsage keyCertSign+cRLSign.
func caExtensions(t testing.TB) []pkix.Extension {
	t.Helper()
	bc := marshalExt(t, oidBasicConstraints, true, struct {
		IsCA bool `asn1:"optional"`
	}{true})
	// keyCertSign (bit 5) and cRLSign (bit 6): 0000 0110 with one unused bit.
	ku := marshalExt(t, oidKeyUsage, true, asn1.BitString{Bytes: []byte{0x06}, BitLength: 7})
	return []pkix.Extension{bc, ku}
}

// leafExtensions are what a device CSR typically asks for, plus an unknown extension
// that certd must copy byte for byte.
func leafExtensions(t testing.TB, dns string) []pkix.Extension {
	t.Helper()
	san := marshalExt(t, oidSubjectAltName, false, []asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(dns)}})
	eku := marshalExt(t, oidExtKeyUsage, false, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 2}})
	custom := marshalExt(t, oidCustom, false, "copied verbatim")
	return []pkix.Extension{san, eku, custom}
}

// parseChain splits a PEM answer into certificates, leaf first.
func parseChain(t testing.TB, text string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(text)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Fatalf("PEM block %q in a chain", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("parse certificate: %v", err)
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("trailing data after the chain: %q", rest)
	}
	if len(out) == 0 {
		t.Fatalf("no certificate in %q", text)
	}
	return out
}

func certPEM(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// opensslVerify runs `openssl verify -CAfile ca leaf` and wants OK.
func opensslVerify(t testing.TB, caPEM, leafPEM string) {
	t.Helper()
	ca, leaf := writeFile(t, "ca.pem", caPEM), writeFile(t, "leaf.pem", leafPEM)
	if out := testenv.Openssl(t, "verify", "-CAfile", ca, leaf); !strings.Contains(out, leaf+": OK") {
		t.Fatalf("openssl verify: %s", out)
	}
}

func opensslText(t testing.TB, certPEM string) string {
	t.Helper()
	return testenv.Openssl(t, "x509", "-noout", "-text", "-in", writeFile(t, "cert.pem", certPEM))
}

func extension(c *x509.Certificate, oid asn1.ObjectIdentifier) (pkix.Extension, int) {
	var found pkix.Extension
	n := 0
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			found, n = e, n+1
		}
	}
	return found, n
}

func lifetime(c *x509.Certificate) time.Duration { return c.NotAfter.Sub(c.NotBefore) }

func near(a, b time.Duration) bool {
	d := a - b
	return d > -2*time.Second && d < 2*time.Second
}

const longName = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-overflow" // 70 characters

// certdConfig is DIR/etc/certd/config.toml written before start: the dev defaults minus the
// principal entry for the dev user (root in CI), so that root's access is the policy's.
func certdConfig(dir string) string {
	return fmt.Sprintf(`homedir_path = %q
max_requests = 10

[endpoints]
aziot_keyd = %q

[broker]
policy_dir = %q
config_reload_debounce_ms = 1000
`, filepath.Join(dir, "lib", "certd"), "unix://"+filepath.Join(dir, "run", "keyd.sock"), filepath.Join(dir, "etc", "policy.d"))
}

func certdFragment(dir string) string {
	return fmt.Sprintf(`
[cert_issuance.local-ca]
method = "self_signed"
expiry_days = 365

[cert_issuance.local_ca]
cert = "local-ca"
pk = "local-ca"

[cert_issuance.leaf-10d]
method = "local_ca"
expiry_days = 10

[cert_issuance.leaf-default]
method = "local_ca"

[cert_issuance.leaf-capped]
method = "local_ca"
expiry_days = 3650

[cert_issuance.leaf-cn]
method = "local_ca"
common_name = %[2]q

[cert_issuance.leaf-subject]
method = "local_ca"
subject = { O = "Contoso", CN = %[2]q, C = "DE", L = "Berlin" }

[cert_issuance.leaf-bad-subject]
method = "local_ca"
subject = { CN = "x", notAName = "y" }

[cert_issuance.self-no-key]
method = "self_signed"

[cert_issuance.leaf-own-ids]
method = "local_ca"

[cert_issuance.rsa-ca]
method = "self_signed"
expiry_days = 100

[cert_issuance.est-cert]
method = "est"

[cert_issuance.explicit-over-est]
method = "est"
expiry_days = 5

[preloaded_certs]
file-cert = "file://%[1]s/preloaded/file-cert.pem"
bundle = ["member-a", "member-b", "member-c"]

[[principal]]
uid = 1001
certs = ["dev-*"]
`, dir, longName)
}

func startCertd(t *testing.T) *certdEnv {
	t.Helper()
	dir := testenv.NewStateDir(t)
	if err := os.MkdirAll(filepath.Join(dir, "etc", "certd"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "certd", "config.toml"), []byte(certdConfig(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.WriteConfig(t, dir, "certd", "50-test.toml", certdFragment(dir))
	if err := os.MkdirAll(filepath.Join(dir, "preloaded"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "preloaded", "file-cert.pem"), []byte("preloaded text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := testenv.StartDev(t, dir)
	p := testenv.NewValidatingProxy(t, d.Socket("certd"), map[string]*testenv.Spec{"2020-09-01": testenv.LoadSpec(t, "certd/2020-09-01.yaml")})
	e := &certdEnv{dir: dir, daemon: d, certs: certs.New(p.Socket), keys: keys.New(d.Socket("keyd")), proxy: p}
	t.Cleanup(e.certs.Close)
	t.Cleanup(e.keys.Close)
	return e
}

const (
	notFoundMsg = "parameter \"id\" has an invalid value\ncaused by: not found"
	internalMsg = "internal error"
)

func TestCertdEndToEnd(t *testing.T) {
	e := startCertd(t)
	ctx := context.Background()
	c := e.certs

	t.Run("import, export, delete", func(t *testing.T) {
		text := "-----BEGIN CERTIFICATE-----\nstored as given, not validated\n-----END CERTIFICATE-----\n"
		if got := certdOK[string](t)(c.Import(ctx, "rt-1", text)); got != text {
			t.Fatalf("PUT echo %q", got)
		}
		if got := certdOK[string](t)(c.Get(ctx, "rt-1")); got != text {
			t.Fatalf("GET %q", got)
		}
		// Laid out as upstream: <alnum>-<sha256>.cer under the homedir's certs directory.
		sum := sha256.Sum256([]byte("rt-1"))
		file := filepath.Join(e.dir, "lib", "certd", "certs", "rt1-"+hex.EncodeToString(sum[:])+".cer")
		if b, err := os.ReadFile(file); err != nil || string(b) != text {
			t.Fatalf("cert file %s: %q %v", file, b, err)
		}
		// Status codes as curl sees them.
		r := e.curl(t, -1, "PUT", "/certificates/rt-2", `{"pem":"x"}`)
		wantReply(t, r, 201, "")
		if string(r.Body) != `{"pem":"x"}` {
			t.Fatalf("PUT body %q", r.Body)
		}
		wantReply(t, e.curl(t, -1, "GET", "/certificates/rt-2", ""), 200, "")
		wantReply(t, e.curl(t, -1, "DELETE", "/certificates/rt-2", ""), 204, "")
		wantReply(t, e.curl(t, -1, "DELETE", "/certificates/rt-2", ""), 204, "")

		if err := c.Delete(ctx, "rt-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Fatalf("cert file after delete: %v", err)
		}
		_, err := c.Get(ctx, "rt-1")
		testenv.WantAPIError(t, err, 400, notFoundMsg)
		// Deleting a missing cert is a success.
		if err := c.Delete(ctx, "never-there"); err != nil {
			t.Fatal(err)
		}
		// IDs are arbitrary strings: a slash and dots stay inside the certs directory.
		for _, id := range []string{"../../escape", "a/b", "ключ"} {
			certdOK[string](t)(c.Import(ctx, id, id))
			if got := certdOK[string](t)(c.Get(ctx, id)); got != id {
				t.Fatalf("%q: %q", id, got)
			}
		}
		if _, err := os.Stat(filepath.Join(e.dir, "lib", "escape")); !os.IsNotExist(err) {
			t.Fatal("a cert ID escaped the certs directory")
		}
	})

	t.Run("request errors", func(t *testing.T) {
		wantReply(t, e.curl(t, -1, "GET", "/certificates/absent", ""), 400, notFoundMsg)
		wantReply(t, e.curl(t, -1, "PUT", "/certificates/x", `{"pem":"x"}`, "Content-Type: text/plain"), 415, "request body must be application/json")
		wantReply(t, e.curl(t, -1, "PUT", "/certificates/x", ""), 422, "EOF while parsing a value at line 1 column 0")
		wantReply(t, e.curl(t, -1, "PUT", "/certificates/x", `{}`), 422, "missing field `pem` at line 1 column 2")
		wantReply(t, e.curl(t, -1, "GET", "/certificates", ""), 400, "method not allowed")
		wantReply(t, e.curl(t, -1, "POST", "/certificates/x", ""), 400, "method not allowed")
		wantReply(t, e.curl(t, -1, "POST", "/certificates/x", `{}`), 400, "method not allowed")
		wantReply(t, e.curl(t, -1, "GET", "/certificates/x?api-version=2021-05-01", ""), 400, `invalid api-version "2021-05-01"`)
		wantReply(t, e.curl(t, -1, "GET", "/certificates/x?api-version=", ""), 400, `invalid api-version ""`)
		wantReply(t, testenv.Curl(t, -1, e.daemon.Socket("certd"), "GET", "/certificates/x", ""), 400, "api-version not specified")
		wantReply(t, e.curl(t, -1, "POST", "/certificates", ""), 400, "missing request body")
		wantReply(t, e.curl(t, -1, "POST", "/certificates", `{"certId":"x"}`), 422, "missing field `csr` at line 1 column 14")
		wantReply(t, e.curl(t, -1, "GET", "/nothing-here", ""), 404, "not found")
		// DELETE ignores its body, but a JSON body must still be JSON.
		wantReply(t, e.curl(t, -1, "DELETE", "/certificates/x", "x"), 422, "expected value at line 1 column 1")
		wantReply(t, e.curl(t, -1, "DELETE", "/certificates/x", "x", "Content-Type: text/plain"), 204, "")
		wantReply(t, e.curl(t, -1, "DELETE", "/certificates/x", `{"anything":1}`), 204, "")
	})

	// The local CA: key pair in keyd, CSR signed through keyd, self-signed by certd.
	caHandle := certdOK[string](t)(e.keys.CreateKeyPair(ctx, "local-ca", "ec-p256"))
	caSigner := certdOK[*keys.Signer](t)(e.keys.Signer(ctx, caHandle))
	var caPEM string
	var ca *x509.Certificate

	t.Run("self-signed local CA (EC)", func(t *testing.T) {
		csr := makeCSR(t, caSigner, pkix.Name{CommonName: "Test Local CA", Organization: []string{"iotbroker"}}, caExtensions(t)...)
		caPEM = certdOK[string](t)(c.Create(ctx, "local-ca", csr, nil))
		chain := parseChain(t, caPEM)
		if len(chain) != 1 {
			t.Fatalf("self-signed answer has %d certificates", len(chain))
		}
		ca = chain[0]
		if got := certdOK[string](t)(c.Get(ctx, "local-ca")); got != caPEM {
			t.Fatal("issued cert not stored under its ID")
		}
		if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 || ca.Version != 3 {
			t.Fatalf("CA extensions lost: IsCA %v KeyUsage %v v%d", ca.IsCA, ca.KeyUsage, ca.Version)
		}
		if !bytes.Equal(ca.RawIssuer, ca.RawSubject) {
			t.Fatal("self-signed issuer != subject")
		}
		if err := ca.CheckSignatureFrom(ca); err != nil {
			t.Fatalf("self signature: %v", err)
		}
		if ca.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Fatalf("signature algorithm %v", ca.SignatureAlgorithm)
		}
		if !near(lifetime(ca), 365*24*time.Hour) {
			t.Fatalf("lifetime %v, want 365 days", lifetime(ca))
		}
		if _, n := extension(ca, oidSKID); n != 1 || len(ca.SubjectKeyId) != 20 {
			t.Fatalf("SKID: %d extensions, %x", n, ca.SubjectKeyId)
		}
		if _, n := extension(ca, oidAKID); n != 0 {
			t.Fatal("a self-signed cert got an AKID")
		}
		opensslVerify(t, caPEM, caPEM)
		text := opensslText(t, caPEM)
		for _, want := range []string{"CA:TRUE", "Certificate Sign, CRL Sign", "X509v3 Subject Key Identifier", "ecdsa-with-SHA256"} {
			if !strings.Contains(text, want) {
				t.Errorf("openssl x509 -text lacks %q:\n%s", want, text)
			}
		}
	})
	if ca == nil {
		t.Fatal("no local CA; the issuance tests need it")
	}

	t.Run("local_ca issuance", func(t *testing.T) {
		key := newECKey(t)
		exts := leafExtensions(t, "device-1.example.com")
		csr := makeCSR(t, key, pkix.Name{CommonName: "device-1"}, exts...)
		out := certdOK[string](t)(c.Create(ctx, "leaf-10d", csr, nil))
		chain := parseChain(t, out)
		if len(chain) != 2 || !bytes.Equal(chain[1].Raw, ca.Raw) || !strings.HasSuffix(out, caPEM) {
			t.Fatalf("chain is not leaf + CA: %d certificates", len(chain))
		}
		leaf := chain[0]
		opensslVerify(t, caPEM, out)
		if leaf.Subject.CommonName != "device-1" || !bytes.Equal(leaf.RawIssuer, ca.RawSubject) {
			t.Fatalf("subject %v issuer %v", leaf.Subject, leaf.Issuer)
		}
		if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
			t.Fatal("public key not taken from the CSR")
		}
		if !near(lifetime(leaf), 10*24*time.Hour) || time.Since(leaf.NotBefore) > time.Minute {
			t.Fatalf("validity %v – %v, want now + 10 days", leaf.NotBefore, leaf.NotAfter)
		}
		if leaf.SerialNumber.Sign() < 0 {
			t.Fatalf("negative serial %v", leaf.SerialNumber)
		}
		// Every CSR extension is in the cert, byte for byte.
		for _, want := range exts {
			got, n := extension(leaf, want.Id)
			if n != 1 || got.Critical != want.Critical || !bytes.Equal(got.Value, want.Value) {
				t.Errorf("extension %v: %d copies, %+v want %+v", want.Id, n, got, want)
			}
		}
		// SKID added (CSR had none), AKID = the CA's SKID.
		if _, n := extension(leaf, oidSKID); n != 1 || len(leaf.SubjectKeyId) == 0 {
			t.Fatal("no SKID added")
		}
		if !bytes.Equal(leaf.AuthorityKeyId, ca.SubjectKeyId) {
			t.Fatalf("AKID %x, CA SKID %x", leaf.AuthorityKeyId, ca.SubjectKeyId)
		}
		text := opensslText(t, out)
		for _, want := range []string{"DNS:device-1.example.com", "TLS Web Client Authentication", "1.3.6.1.4.1.311.99.1:", "X509v3 Subject Key Identifier", "X509v3 Authority Key Identifier", "ecdsa-with-SHA256"} {
			if !strings.Contains(text, want) {
				t.Errorf("openssl x509 -text lacks %q:\n%s", want, text)
			}
		}
		if got := certdOK[string](t)(c.Get(ctx, "leaf-10d")); got != out {
			t.Fatal("issued chain not stored")
		}
	})

	t.Run("expiry_days: default 30, capped at the issuer", func(t *testing.T) {
		out := certdOK[string](t)(c.Create(ctx, "leaf-default", makeCSR(t, newECKey(t), pkix.Name{CommonName: "d"}), nil))
		if l := lifetime(parseChain(t, out)[0]); !near(l, 30*24*time.Hour) {
			t.Fatalf("default lifetime %v", l)
		}
		out = certdOK[string](t)(c.Create(ctx, "leaf-capped", makeCSR(t, newECKey(t), pkix.Name{CommonName: "c"}), nil))
		leaf := parseChain(t, out)[0]
		if !leaf.NotAfter.Equal(ca.NotAfter) {
			t.Fatalf("notAfter %v, issuer's %v", leaf.NotAfter, ca.NotAfter)
		}
		end := func(p string) string {
			return testenv.Openssl(t, "x509", "-noout", "-enddate", "-in", writeFile(t, "c.pem", p))
		}
		if a, b := end(out), end(caPEM); a != b {
			t.Fatalf("openssl: leaf %s, CA %s", a, b)
		}
		opensslVerify(t, caPEM, out)
	})

	t.Run("subject overrides", func(t *testing.T) {
		out := certdOK[string](t)(c.Create(ctx, "leaf-cn", makeCSR(t, newECKey(t), pkix.Name{CommonName: "from-csr", Organization: []string{"dropped"}}), nil))
		leaf := parseChain(t, out)[0]
		if len(leaf.Subject.Names) != 1 || leaf.Subject.CommonName != longName[:64] {
			t.Fatalf("common_name override: %v", leaf.Subject)
		}
		subj := testenv.Openssl(t, "x509", "-noout", "-subject", "-nameopt", "compat", "-in", writeFile(t, "c.pem", out))
		if strings.TrimSpace(subj) != "subject=/CN="+longName[:64] {
			t.Fatalf("openssl subject %q", subj)
		}
		opensslVerify(t, caPEM, out)

		out = certdOK[string](t)(c.Create(ctx, "leaf-subject", makeCSR(t, newECKey(t), pkix.Name{CommonName: "from-csr"}), nil))
		subj = testenv.Openssl(t, "x509", "-noout", "-subject", "-nameopt", "compat", "-in", writeFile(t, "c.pem", out))
		// Sorted bytewise by key: C < CN < L < O; the CN truncated to 64 characters.
		if want := "subject=/C=DE/CN=" + longName[:64] + "/L=Berlin/O=Contoso"; strings.TrimSpace(subj) != want {
			t.Fatalf("openssl subject %q, want %q", subj, want)
		}
		opensslVerify(t, caPEM, out)
	})

	t.Run("CSR key identifiers are kept", func(t *testing.T) {
		ownSKID := marshalExt(t, oidSKID, false, []byte{1, 2, 3, 4})
		ownAKID := marshalExt(t, oidAKID, false, struct {
			KeyID []byte `asn1:"optional,tag:0"`
		}{[]byte{0xAA, 0xBB}})
		out := certdOK[string](t)(c.Create(ctx, "leaf-own-ids", makeCSR(t, newECKey(t), pkix.Name{CommonName: "ids"}, ownSKID, ownAKID), nil))
		leaf := parseChain(t, out)[0]
		for _, want := range []pkix.Extension{ownSKID, ownAKID} {
			got, n := extension(leaf, want.Id)
			if n != 1 || !bytes.Equal(got.Value, want.Value) {
				t.Errorf("%v: %d copies, value %x want %x", want.Id, n, got.Value, want.Value)
			}
		}
		if err := leaf.CheckSignatureFrom(ca); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("explicit issuer wins over a configured method", func(t *testing.T) {
		out := certdOK[string](t)(c.Create(ctx, "explicit-over-est", makeCSR(t, newECKey(t), pkix.Name{CommonName: "explicit"}), &certs.IssuerRef{CertID: "local-ca", KeyHandle: caHandle}))
		chain := parseChain(t, out)
		if len(chain) != 2 || !bytes.Equal(chain[1].Raw, ca.Raw) {
			t.Fatal("chain is not leaf + CA")
		}
		// expiry_days of the cert's own [cert_issuance] entry applies to explicit issuers too.
		if !near(lifetime(chain[0]), 5*24*time.Hour) {
			t.Fatalf("lifetime %v, want 5 days", lifetime(chain[0]))
		}
		opensslVerify(t, caPEM, out)
		// An ID with no [cert_issuance] entry at all is signed too.
		out = certdOK[string](t)(c.Create(ctx, "unconfigured-explicit", makeCSR(t, newECKey(t), pkix.Name{CommonName: "u"}), &certs.IssuerRef{CertID: "local-ca", KeyHandle: caHandle}))
		opensslVerify(t, caPEM, out)
	})

	t.Run("RSA issuer", func(t *testing.T) {
		h := certdOK[string](t)(e.keys.CreateKeyPair(ctx, "rsa-ca", "rsa-2048"))
		signer := certdOK[*keys.Signer](t)(e.keys.Signer(ctx, h))
		rsaPEM := certdOK[string](t)(c.Create(ctx, "rsa-ca", makeCSR(t, signer, pkix.Name{CommonName: "RSA CA"}, caExtensions(t)...), nil))
		rsaCA := parseChain(t, rsaPEM)[0]
		if rsaCA.SignatureAlgorithm != x509.SHA256WithRSA || !rsaCA.IsCA || !near(lifetime(rsaCA), 100*24*time.Hour) {
			t.Fatalf("RSA CA: %v IsCA %v lifetime %v", rsaCA.SignatureAlgorithm, rsaCA.IsCA, lifetime(rsaCA))
		}
		opensslVerify(t, rsaPEM, rsaPEM)
		out := certdOK[string](t)(c.Create(ctx, "rsa-leaf", makeCSR(t, newECKey(t), pkix.Name{CommonName: "rsa-leaf"}), &certs.IssuerRef{CertID: "rsa-ca", KeyHandle: h}))
		leaf := parseChain(t, out)[0]
		if leaf.SignatureAlgorithm != x509.SHA256WithRSA || !bytes.Equal(leaf.AuthorityKeyId, rsaCA.SubjectKeyId) {
			t.Fatalf("RSA-issued leaf: %v AKID %x", leaf.SignatureAlgorithm, leaf.AuthorityKeyId)
		}
		if !near(lifetime(leaf), 30*24*time.Hour) {
			t.Fatalf("lifetime %v", lifetime(leaf))
		}
		opensslVerify(t, rsaPEM, out)
		if text := opensslText(t, out); !strings.Contains(text, "sha256WithRSAEncryption") {
			t.Fatalf("openssl:\n%s", text)
		}
	})

	t.Run("issuer without SKID gives no AKID", func(t *testing.T) {
		h := certdOK[string](t)(e.keys.CreateKeyPair(ctx, "noskid-ca", "ec-p256"))
		signer := certdOK[*keys.Signer](t)(e.keys.Signer(ctx, h))
		// basicConstraints through ExtraExtensions: Go adds an SKID only for IsCA templates.
		tmpl := &x509.Certificate{
			SerialNumber:    big.NewInt(7),
			Subject:         pkix.Name{CommonName: "CA without SKID"},
			NotBefore:       time.Now().Add(-time.Minute),
			NotAfter:        time.Now().Add(48 * time.Hour),
			ExtraExtensions: caExtensions(t),
		}
		der := certdOK[[]byte](t)(x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer))
		noskid := certdOK[*x509.Certificate](t)(x509.ParseCertificate(der))
		if len(noskid.SubjectKeyId) != 0 {
			t.Fatal("test CA has an SKID")
		}
		caText := certPEM(noskid)
		certdOK[string](t)(c.Import(ctx, "noskid-ca", caText))
		out := certdOK[string](t)(c.Create(ctx, "noskid-leaf", makeCSR(t, newECKey(t), pkix.Name{CommonName: "n"}), &certs.IssuerRef{CertID: "noskid-ca", KeyHandle: h}))
		leaf := parseChain(t, out)[0]
		if _, n := extension(leaf, oidAKID); n != 0 {
			t.Fatalf("AKID %x added although the issuer has no SKID", leaf.AuthorityKeyId)
		}
		if len(leaf.SubjectKeyId) == 0 {
			t.Fatal("no SKID added")
		}
		// The cap at the issuer's notAfter (2 days < default 30).
		if !leaf.NotAfter.Equal(noskid.NotAfter) {
			t.Fatalf("notAfter %v, issuer's %v", leaf.NotAfter, noskid.NotAfter)
		}
		opensslVerify(t, caText, out)
	})

	t.Run("issuance errors", func(t *testing.T) {
		const csrInvalid = "parameter \"csr\" has an invalid value\ncaused by: "
		for name, bad := range map[string]string{
			"not PEM":        "hello",
			"bad DER":        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
			"wrong PEM type": caPEM,
		} {
			_, err := c.Create(ctx, "leaf-10d", bad, nil)
			var apiErr *certs.APIError
			if !asAPIError(err, &apiErr) || apiErr.Status != 400 || !strings.HasPrefix(apiErr.Message, csrInvalid) || len(apiErr.Message) == len(csrInvalid) {
				t.Errorf("%s: %v", name, err)
			}
		}
		good := makeCSR(t, newECKey(t), pkix.Name{CommonName: "sig"})
		block, _ := pem.Decode([]byte(good))
		block.Bytes[len(block.Bytes)-1] ^= 0x01
		broken := string(pem.EncodeToMemory(block))
		_, err := c.Create(ctx, "leaf-10d", broken, nil)
		testenv.WantAPIError(t, err, 400, csrInvalid+"CSR failed to be verified with its public key")

		_, err = c.Create(ctx, "leaf-10d", good, &certs.IssuerRef{CertID: "no-such-ca", KeyHandle: caHandle})
		testenv.WantAPIError(t, err, 400, "parameter \"issuer.certId\" has an invalid value\ncaused by: not found")
		// An issuer stored with no certificate in it.
		certdOK[string](t)(c.Import(ctx, "empty-ca", "no certificate here\n"))
		_, err = c.Create(ctx, "leaf-10d", good, &certs.IssuerRef{CertID: "empty-ca", KeyHandle: caHandle})
		testenv.WantAPIError(t, err, 400, "parameter \"issuer.certId\" has an invalid value\ncaused by: invalid issuer")
		// A stored issuer whose certificate block is corrupt fails when it is parsed: 500.
		certdOK[string](t)(c.Import(ctx, "corrupt-ca", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
		_, err = c.Create(ctx, "leaf-10d", good, &certs.IssuerRef{CertID: "corrupt-ca", KeyHandle: caHandle})
		testenv.WantAPIError(t, err, 500, internalMsg)
		// Issuer handles: a NUL byte, a forged handle or a handle of no key pair are
		// parameter errors (upstream: 500 for the last two; docs/RATIONALE.md).
		_, err = c.Create(ctx, "leaf-10d", good, &certs.IssuerRef{CertID: "local-ca", KeyHandle: "sr=ab\x00c"})
		testenv.WantAPIError(t, err, 400, "parameter \"issuer.privateKeyHandle\" has an invalid value\ncaused by: nul byte found in provided data at position: 5")
		forged := caHandle[:len(caHandle)-4] + "AAA="
		if forged == caHandle {
			forged = caHandle[:len(caHandle)-4] + "BBB="
		}
		for _, h := range []string{forged, "", "garbage"} {
			_, err = c.Create(ctx, "leaf-10d", good, &certs.IssuerRef{CertID: "local-ca", KeyHandle: h})
			testenv.WantAPIError(t, err, 400, "parameter \"issuer.privateKeyHandle\" has an invalid value\ncaused by: invalid handle")
		}
		// self_signed needs the key pair to exist: certd loads it, it does not create it.
		_, err = c.Create(ctx, "self-no-key", good, nil)
		testenv.WantAPIError(t, err, 500, internalMsg)
		if _, err := e.keys.LoadKeyPair(ctx, "self-no-key"); err == nil {
			t.Fatal("certd created a key pair for self_signed")
		}
		// A subject table with a name OpenSSL does not know fails issuance.
		_, err = c.Create(ctx, "leaf-bad-subject", good, nil)
		testenv.WantAPIError(t, err, 500, internalMsg)
		// No [cert_issuance.<id>] and no issuer; EST until the EST flow lands.
		_, err = c.Create(ctx, "unconfigured", good, nil)
		testenv.WantAPIError(t, err, 500, internalMsg)
		_, err = c.Create(ctx, "est-cert", good, nil)
		testenv.WantAPIError(t, err, 500, internalMsg)
		for _, id := range []string{"unconfigured", "est-cert"} {
			_, err = c.Get(ctx, id)
			testenv.WantAPIError(t, err, 400, notFoundMsg)
		}
		// A failed issuance leaves the stored cert alone.
		before := certdOK[string](t)(c.Get(ctx, "leaf-10d"))
		_, err = c.Create(ctx, "leaf-10d", broken, nil)
		testenv.WantAPIError(t, err, 400, csrInvalid+"CSR failed to be verified with its public key")
		if after := certdOK[string](t)(c.Get(ctx, "leaf-10d")); after != before {
			t.Fatal("a refused request changed the stored cert")
		}
	})

	t.Run("preloaded certs", func(t *testing.T) {
		file := filepath.Join(e.dir, "preloaded", "file-cert.pem")
		if got := certdOK[string](t)(c.Get(ctx, "file-cert")); got != "preloaded text\n" {
			t.Fatalf("GET file-cert %q", got)
		}
		certdOK[string](t)(c.Import(ctx, "file-cert", "new text\n"))
		if b, _ := os.ReadFile(file); string(b) != "new text\n" {
			t.Fatalf("preloaded file holds %q", b)
		}
		// Issuing into a preloaded ID writes the file too.
		out := certdOK[string](t)(c.Create(ctx, "file-cert", makeCSR(t, newECKey(t), pkix.Name{CommonName: "f"}), &certs.IssuerRef{CertID: "local-ca", KeyHandle: caHandle}))
		if b, _ := os.ReadFile(file); string(b) != out {
			t.Fatal("issued chain not written to the preloaded file")
		}
		sum := sha256.Sum256([]byte("file-cert"))
		if _, err := os.Stat(filepath.Join(e.dir, "lib", "certd", "certs", "filecert-"+hex.EncodeToString(sum[:])+".cer")); !os.IsNotExist(err) {
			t.Fatal("a preloaded cert was written to the homedir")
		}
		if err := c.Delete(ctx, "file-cert"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Fatal("DELETE kept the preloaded file")
		}
		_, err := c.Get(ctx, "file-cert")
		testenv.WantAPIError(t, err, 400, notFoundMsg)
		// A stored cert that is not text (a DER file) is a 500, and certd keeps serving.
		if err := os.WriteFile(file, []byte{0x30, 0x82, 0xff, 0xfe, 0x00}, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = c.Get(ctx, "file-cert")
		testenv.WantAPIError(t, err, 500, internalMsg)
		certdOK[string](t)(c.Get(ctx, "local-ca"))

		// An array ID: the concatenation of the members that exist.
		_, err = c.Get(ctx, "bundle")
		testenv.WantAPIError(t, err, 400, notFoundMsg)
		certdOK[string](t)(c.Import(ctx, "member-a", "A\n"))
		certdOK[string](t)(c.Import(ctx, "member-c", "C\n"))
		if got := certdOK[string](t)(c.Get(ctx, "bundle")); got != "A\nC\n" {
			t.Fatalf("bundle %q", got)
		}
		certdOK[string](t)(c.Import(ctx, "member-b", "B\n"))
		if got := certdOK[string](t)(c.Get(ctx, "bundle")); got != "A\nB\nC\n" {
			t.Fatalf("bundle %q", got)
		}
		_, err = c.Import(ctx, "bundle", "x")
		testenv.WantAPIError(t, err, 500, internalMsg)
		testenv.WantAPIError(t, c.Delete(ctx, "bundle"), 500, internalMsg)
		_, err = c.Create(ctx, "bundle", makeCSR(t, newECKey(t), pkix.Name{CommonName: "b"}), &certs.IssuerRef{CertID: "local-ca", KeyHandle: caHandle})
		testenv.WantAPIError(t, err, 500, internalMsg)
		// The bundle as an issuer: its first member is the issuer leaf.
		certdOK[string](t)(c.Import(ctx, "member-a", caPEM))
		out = certdOK[string](t)(c.Create(ctx, "from-bundle", makeCSR(t, newECKey(t), pkix.Name{CommonName: "fb"}), &certs.IssuerRef{CertID: "bundle", KeyHandle: caHandle}))
		if !strings.HasSuffix(out, caPEM+"B\nC\n") {
			t.Fatalf("chain from a bundle issuer: %q", out)
		}
		opensslVerify(t, caPEM, out)
	})

	t.Run("authorization by peer credentials", func(t *testing.T) {
		const put = `{"pem":"x"}`
		// uid 1001 may write dev-*.
		wantReply(t, e.curl(t, 1001, "PUT", "/certificates/dev-1", put), 201, "")
		wantReply(t, e.curl(t, 1001, "PUT", "/certificates/other", put), 401, "user 1001 is not authorized to modify the cert other")
		wantReply(t, e.curl(t, 1001, "DELETE", "/certificates/other", ""), 401, "user 1001 is not authorized to modify the cert other")
		wantReply(t, e.curl(t, 1001, "DELETE", "/certificates/dev-1", ""), 204, "")
		// Authorization comes before the CSR is looked at; the issuer ID is not checked.
		wantReply(t, e.curl(t, 1001, "POST", "/certificates", `{"certId":"other","csr":"garbage"}`), 401, "user 1001 is not authorized to modify the cert other")
		body, _ := json.Marshal(certs.CreateCertRequest{CertID: ptr("dev-2"), CSR: ptr(makeCSR(t, newECKey(t), pkix.Name{CommonName: "dev-2"})), Issuer: &certs.Issuer{CertID: ptr("local-ca"), PrivateKeyHandle: &caHandle}})
		r := e.curl(t, 1001, "POST", "/certificates", string(body))
		wantReply(t, r, 201, "")
		var issued certs.CertResponse
		json.Unmarshal(r.Body, &issued)
		opensslVerify(t, caPEM, issued.PEM)
		// Globs are whole-string and case-sensitive.
		wantReply(t, e.curl(t, 1001, "PUT", "/certificates/DEV-1", put), 401, "user 1001 is not authorized to modify the cert DEV-1")
		wantReply(t, e.curl(t, 1001, "PUT", "/certificates/xdev-1", put), 401, "user 1001 is not authorized to modify the cert xdev-1")

		// uid 1002 has no principal: no writes, but reads.
		wantReply(t, e.curl(t, 1002, "PUT", "/certificates/dev-3", put), 401, "user 1002 is not authorized to modify the cert dev-3")
		wantReply(t, e.curl(t, 1002, "DELETE", "/certificates/dev-2", ""), 401, "user 1002 is not authorized to modify the cert dev-2")
		wantReply(t, e.curl(t, 1002, "POST", "/certificates", string(body)), 401, "user 1002 is not authorized to modify the cert dev-2")
		r = e.curl(t, 1002, "GET", "/certificates/dev-2", "")
		wantReply(t, r, 200, "")
		if !bytes.Equal(r.Body, mustJSON(t, certs.CertResponse{PEM: issued.PEM})) {
			t.Fatalf("GET as 1002: %q", r.Body)
		}
		wantReply(t, e.curl(t, 1002, "GET", "/certificates/absent", ""), 400, notFoundMsg)

		// Root has no [[principal]] entry in this config and may still do anything.
		wantReply(t, e.curl(t, 0, "PUT", "/certificates/other", put), 201, "")
		wantReply(t, e.curl(t, 0, "DELETE", "/certificates/other", ""), 204, "")
	})

	t.Run("principals are hot-reloaded", func(t *testing.T) {
		const put = `{"pem":"hot"}`
		wantReply(t, e.curl(t, 1003, "PUT", "/certificates/hot-1", put), 401, "user 1003 is not authorized to modify the cert hot-1")
		testenv.WriteConfig(t, e.dir, "certd", "60-hot.toml", "[[principal]]\nuid = 1003\ncerts = [\"hot-*\"]\n")
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := e.curl(t, 1003, "PUT", "/certificates/hot-1", put)
			if r.Status == 201 {
				break
			}
			wantReply(t, r, 401, "user 1003 is not authorized to modify the cert hot-1")
			if time.Now().After(deadline) {
				t.Fatal("uid 1003 still refused 10 s after the config change")
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The previous principals still hold; 1003 got only its own pattern.
		wantReply(t, e.curl(t, 1001, "PUT", "/certificates/dev-9", `{"pem":"x"}`), 201, "")
		wantReply(t, e.curl(t, 1003, "PUT", "/certificates/dev-9", put), 401, "user 1003 is not authorized to modify the cert dev-9")
	})

	checked := e.proxy.Checked()
	for _, route := range []string{"POST /certificates", "GET /certificates/{id}", "PUT /certificates/{id}", "DELETE /certificates/{id}"} {
		if checked[route] == 0 {
			t.Errorf("no %s answer was validated against the OpenAPI file (checked: %v)", route, checked)
		}
	}
}

func ptr(s string) *string { return &s }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func asAPIError(err error, target **certs.APIError) bool {
	e, ok := err.(*certs.APIError)
	if ok {
		*target = e
	}
	return ok
}
