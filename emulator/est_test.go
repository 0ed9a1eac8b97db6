package emulator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func newCSR(t *testing.T, cn string, clientAuth bool) ([]byte, crypto.Signer) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	if clientAuth {
		v, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 2}})
		tmpl.ExtraExtensions = []pkix.Extension{{Id: oidExtKeyUsage, Value: v}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// upstreamBody is the CSR as upstream sends it: base64 wrapped at 64 with LF.
func upstreamBody(der []byte) []byte {
	s := base64.StdEncoding.EncodeToString(der)
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	b.WriteString(s + "\n")
	return []byte(b.String())
}

func parseESTCerts(t *testing.T, r resp) []*x509.Certificate {
	t.Helper()
	if r.header.Get("Content-Type") != pkcs7CertsOnly {
		t.Fatalf("Content-Type %q", r.header.Get("Content-Type"))
	}
	der, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(r.body)))
	if err != nil {
		t.Fatalf("EST body is not base64: %v", err)
	}
	certs, err := ParseCertsOnly(der)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func estEmu(t *testing.T) *Emulator {
	return startEmu(t, Config{ESTLabels: []ESTLabelConfig{
		{Users: map[string]string{"estuser": "estpass"}},
		{Label: "basic-only", Policy: "basic", Users: map[string]string{"estuser": "estpass"}},
		{Label: "cert-only", Policy: "cert"},
		{Label: "both", Policy: "basic_and_cert", Users: map[string]string{"estuser": "estpass"}},
		{Label: "short", Validity: 30 * time.Second, Users: map[string]string{"estuser": "estpass"}},
	}})
}

const basicAuth = "Basic ZXN0dXNlcjplc3RwYXNz"

func TestESTCACertsAndEnroll(t *testing.T) {
	e := estEmu(t)
	c := newClient(t, e, nil, nil)
	base := e.ESTURL() + "/.well-known/est"
	r := c.do("GET", base+"/cacerts", nil, nil)
	wantStatus(t, r, 200)
	cas := parseESTCerts(t, r)
	if len(cas) != 2 || !cas[0].Equal(e.ESTCA("").Cert) || !cas[1].Equal(e.PKI().Root.Cert) {
		t.Fatalf("cacerts chain: %d certs", len(cas))
	}
	der, _ := newCSR(t, "device-01", false)
	hdr := map[string]string{"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64", "Authorization": basicAuth}
	r = c.do("POST", base+"/simpleenroll", hdr, upstreamBody(der))
	wantStatus(t, r, 200)
	leafs := parseESTCerts(t, r)
	if len(leafs) != 1 || leafs[0].Subject.CommonName != "device-01" || leafs[0].IsCA {
		t.Fatal("simpleenroll must return the leaf only")
	}
	if leafs[0].ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(leafs[0].SubjectKeyId) == 0 || len(leafs[0].AuthorityKeyId) == 0 {
		t.Fatal("issued leaf profile")
	}
	if d := leafs[0].NotAfter.Sub(leafs[0].NotBefore); d < 29*24*time.Hour {
		t.Fatalf("default validity %v", d)
	}
	if _, err := leafs[0].Verify(x509.VerifyOptions{Roots: pool(e.PKI().Root.Cert), Intermediates: pool(e.ESTCA("").Cert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	// CRLF and single-line bodies are accepted too.
	for _, b := range [][]byte{base64Lines(der), []byte(base64.StdEncoding.EncodeToString(der))} {
		wantStatus(t, c.do("POST", base+"/simpleenroll", hdr, b), 200)
	}
	// Short-validity label (cert_rotation knob's "very short validity").
	r = c.do("POST", base+"/short/simpleenroll", hdr, upstreamBody(der))
	if d := parseESTCerts(t, r)[0].NotAfter.Sub(e.Now()); d > 31*time.Second {
		t.Fatalf("short validity %v", d)
	}
	bad := []struct {
		name, path, ct, auth string
		body                 []byte
		status               int
	}{
		{"wrong content type", "/simpleenroll", "application/json", basicAuth, upstreamBody(der), 415},
		{"not base64", "/simpleenroll", "application/pkcs10", basicAuth, []byte("@@@"), 400},
		{"corrupt CSR signature", "/simpleenroll", "application/pkcs10", basicAuth, upstreamBody(corrupt(der)), 400},
		{"no credentials", "/simpleenroll", "application/pkcs10", "", upstreamBody(der), 401},
		{"wrong password", "/simpleenroll", "application/pkcs10", "Basic ZXN0dXNlcjp3cm9uZw==", upstreamBody(der), 401},
		{"cert-only label with Basic", "/cert-only/simpleenroll", "application/pkcs10", basicAuth, upstreamBody(der), 401},
		{"both label with Basic only", "/both/simpleenroll", "application/pkcs10", basicAuth, upstreamBody(der), 401},
		{"unknown label", "/nolabel/simpleenroll", "application/pkcs10", basicAuth, upstreamBody(der), 404},
		{"csrattrs unsupported", "/csrattrs", "", "", nil, 404},
		{"serverkeygen unsupported", "/serverkeygen", "application/pkcs10", basicAuth, upstreamBody(der), 404},
		{"reenroll without cert", "/simplereenroll", "application/pkcs10", basicAuth, upstreamBody(der), 401},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.ct != "" {
				h["Content-Type"] = tc.ct
			}
			if tc.auth != "" {
				h["Authorization"] = tc.auth
			}
			method := "POST"
			if tc.body == nil {
				method = "GET"
			}
			r := c.do(method, base+tc.path, h, tc.body)
			wantStatus(t, r, tc.status)
			if tc.status == 401 && r.header.Get("WWW-Authenticate") != `Basic realm="est"` {
				t.Fatal("401 must carry WWW-Authenticate")
			}
		})
	}
	// Basic-only label.
	wantStatus(t, c.do("POST", base+"/basic-only/simpleenroll", hdr, upstreamBody(der)), 200)
	// Request log records the auth method.
	found := false
	for _, le := range e.Log() {
		if le.Listener == "est" && le.Auth != nil && le.Auth.User == "estuser" && strings.Contains(le.Auth.Verdict, "issued CN=device-01") {
			found = true
		}
	}
	if !found {
		t.Fatal("EST log lacks user and issued subject")
	}
}

func corrupt(der []byte) []byte {
	c := append([]byte{}, der...)
	c[len(c)-5] ^= 0xff
	return c
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestESTClientCertPolicies(t *testing.T) {
	e := estEmu(t)
	base := e.ESTURL() + "/.well-known/est"
	bootCert, bootKeyPEM, _ := e.IssueBootstrapCert("bootstrap-dev", time.Hour)
	bootKey, _ := ParseKeyPEM(bootKeyPEM)
	boot := newClient(t, e, bootCert, bootKey)
	pk := map[string]string{"Content-Type": "application/pkcs10"}
	// Bootstrap cert may enroll an EST identity (clientAuth CSR) but not a plain cert.
	idCSR, idKey := newCSR(t, "est-identity", true)
	plainCSR, _ := newCSR(t, "device-01", false)
	wantStatus(t, boot.do("POST", base+"/cert-only/simpleenroll", pk, upstreamBody(plainCSR)), 401)
	r := boot.do("POST", base+"/cert-only/simpleenroll", pk, upstreamBody(idCSR))
	wantStatus(t, r, 200)
	identity := parseESTCerts(t, r)[0]
	// The EST identity (leaf only, no intermediates) may enroll anything, on any policy
	// that accepts certs, and re-enroll with the same subject.
	id := newClient(t, e, identity, idKey)
	wantStatus(t, id.do("POST", base+"/cert-only/simpleenroll", pk, upstreamBody(plainCSR)), 200)
	// Each label has its own EST CA: an identity of one label is unknown to another.
	wantStatus(t, id.do("POST", base+"/both/simpleenroll", pk, upstreamBody(plainCSR)), 401)
	sameSubject, _ := newCSR(t, "est-identity", true)
	wantStatus(t, id.do("POST", base+"/cert-only/simplereenroll", pk, upstreamBody(sameSubject)), 200)
	wantStatus(t, id.do("POST", base+"/cert-only/simplereenroll", pk, upstreamBody(plainCSR)), 400)
	wantStatus(t, boot.do("POST", base+"/cert-only/simplereenroll", pk, upstreamBody(idCSR)), 401)
	// cert_rotation: bootstrap refused after first use.
	e.RefuseBootstrapAfterFirstUse(true)
	wantStatus(t, boot.do("POST", base+"/cert-only/simpleenroll", pk, upstreamBody(idCSR)), 401)
	// cert_rotation: revoke a subject.
	e.RevokeSubject("est-identity")
	wantStatus(t, id.do("POST", base+"/cert-only/simpleenroll", pk, upstreamBody(plainCSR)), 401)
	// Unknown CA.
	stranger, _ := NewRootCA("stranger")
	sc, sk, _ := stranger.IssueLeaf("x", time.Hour, nil, nil)
	wantStatus(t, newClient(t, e, sc, sk).do("POST", base+"/cert-only/simpleenroll", pk, upstreamBody(plainCSR)), 401)
}

func TestESTFaultKnobs(t *testing.T) {
	e := estEmu(t)
	c := newClient(t, e, nil, nil)
	base := e.ESTURL() + "/.well-known/est"
	der, _ := newCSR(t, "device-01", false)
	hdr := map[string]string{"Content-Type": "application/pkcs10", "Authorization": basicAuth}
	e.AddFault(Fault{Kind: FaultESTPending, Route: "simpleenroll", RetryAfter: 7, Next: 1})
	r := c.do("POST", base+"/simpleenroll", hdr, upstreamBody(der))
	wantStatus(t, r, 202)
	if r.header.Get("Retry-After") != "7" {
		t.Fatal("est_pending must send Retry-After")
	}
	wantStatus(t, c.do("POST", base+"/simpleenroll", hdr, upstreamBody(der)), 200)
	cases := []struct {
		variant, route, ct string
		check              func(t *testing.T, r resp)
	}{
		{MalformedContentType, "cacerts", "application/octet-stream", nil},
		{MalformedContentTypeUpper, "cacerts", "Application/PKCS7-MIME; smime-type=certs-only", nil},
		{MalformedPEM, "cacerts", pkcs7CertsOnly, func(t *testing.T, r resp) {
			if !strings.HasPrefix(string(r.body), "-----BEGIN PKCS7-----") {
				t.Fatal("want PEM body")
			}
		}},
		{MalformedNoCerts, "cacerts", pkcs7CertsOnly, func(t *testing.T, r resp) {
			if len(parseESTCerts(t, r)) != 0 {
				t.Fatal("want no certificates")
			}
		}},
		{MalformedFullChain, "simpleenroll", pkcs7CertsOnly, func(t *testing.T, r resp) {
			if len(parseESTCerts(t, r)) != 3 {
				t.Fatal("want leaf + chain")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.variant, func(t *testing.T) {
			e.AddFault(Fault{Kind: FaultMalformed, Variant: tc.variant, Endpoint: "est", Route: tc.route, Next: 1})
			var r resp
			if tc.route == "cacerts" {
				r = c.do("GET", base+"/cacerts", nil, nil)
			} else {
				r = c.do("POST", base+"/simpleenroll", hdr, upstreamBody(der))
			}
			wantStatus(t, r, 200)
			if r.header.Get("Content-Type") != tc.ct {
				t.Fatalf("Content-Type %q", r.header.Get("Content-Type"))
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
	// server_error targeted at one label only.
	e.AddFault(Fault{Kind: FaultServerError, Endpoint: "est", ID: "short", Next: 1})
	wantStatus(t, c.do("POST", base+"/simpleenroll", hdr, upstreamBody(der)), 200)
	wantStatus(t, c.do("POST", base+"/short/simpleenroll", hdr, upstreamBody(der)), 500)
}

func FuzzDecodeESTBody(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	f.Add(upstreamBody(der))
	f.Add([]byte("MAsGCSqGSIb3DQEHAg=="))
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := decodeESTBody(b)
		if err == nil && csr == nil {
			t.Fatal("nil CSR without error")
		}
	})
}
