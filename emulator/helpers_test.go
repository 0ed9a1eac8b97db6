package emulator

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	testScope = "0ne00000A0A"
	testKey   = "dGhpcy1pcy1hLXRlc3Qta2V5LWZvci1kcHMtc2FzLXRva2Vucw=="
	testGroup = "dGhpcy1pcy1hLXRlc3QtZ3JvdXAtZW5yb2xsbWVudC1rZXktZm9yLWRwcy14eXo="
)

// startEmu starts an emulator with a fixed clock-independent config and registers cleanup.
func startEmu(t *testing.T, cfg Config) *Emulator {
	t.Helper()
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = 1
	}
	e, err := Start(cfg)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(e.Stop)
	return e
}

// client is a test HTTP client trusting the emulator root, optionally with a client cert.
type client struct {
	t    *testing.T
	http *http.Client
	// lax turns off the Content-Type check of do (tests of the malformed knob).
	lax bool
}

func newClient(t *testing.T, e *Emulator, cert *x509.Certificate, key crypto.Signer, chain ...*x509.Certificate) *client {
	pool := x509.NewCertPool()
	pool.AddCert(e.PKI().Root.Cert)
	tc := &tls.Config{RootCAs: pool}
	if cert != nil {
		raw := [][]byte{cert.Raw}
		for _, c := range chain {
			raw = append(raw, c.Raw)
		}
		tc.Certificates = []tls.Certificate{{Certificate: raw, PrivateKey: key}}
	}
	return &client{t: t, http: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

func (c *client) do(method, url string, hdr map[string]string, body []byte) resp {
	c.t.Helper()
	r, err := c.try(method, url, hdr, body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	// Checklist item: every JSON response carries application/json; charset=utf-8.
	if !c.lax && len(r.body) > 0 && (r.body[0] == '{' || r.body[0] == '[') && r.header.Get("Content-Type") != jsonContentType {
		c.t.Errorf("%s %s: JSON answer with Content-Type %q", method, url, r.header.Get("Content-Type"))
	}
	return r
}

func (c *client) try(method, url string, hdr map[string]string, body []byte) (resp, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return resp{}, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}, nil
}

// dpsToken builds an upstream-style DPS token valid for lifetime.
func dpsToken(e *Emulator, key, scope, regID string, lifetime time.Duration) string {
	raw, _ := base64.StdEncoding.DecodeString(key)
	return BuildSAS(raw, strings.ToLower(scope+"/registrations/"+regID), e.Now().Add(lifetime).Unix(), "registration")
}

func registerURL(e *Emulator, scope, regID, apiVersion string) string {
	return e.DPSURL() + "/" + scope + "/registrations/" + regID + "/register?api-version=" + apiVersion
}

func opURL(e *Emulator, scope, regID, opID, apiVersion string) string {
	return e.DPSURL() + "/" + scope + "/registrations/" + regID + "/operations/" + opID + "?api-version=" + apiVersion
}

func regBody(regID string) []byte { return []byte(`{"registrationId":"` + regID + `"}`) }

// register runs PUT + polls until a terminal status (bounded) and returns the final body.
func register(t *testing.T, c *client, e *Emulator, regID, auth string, body []byte) map[string]any {
	t.Helper()
	hdr := map[string]string{"Content-Type": "application/json"}
	if auth != "" {
		hdr["Authorization"] = auth
	}
	r := c.do("PUT", registerURL(e, testScope, regID, "2021-06-01"), hdr, body)
	if r.status != 202 {
		t.Fatalf("register: status %d: %s", r.status, r.body)
	}
	op := r.json(t)["operationId"].(string)
	for i := 0; i < 20; i++ {
		p := c.do("GET", opURL(e, testScope, regID, op, "2021-06-01"), hdr, nil)
		m := p.json(t)
		if m["status"] != "assigning" {
			if p.status != 200 {
				t.Fatalf("terminal poll status %d", p.status)
			}
			return m
		}
	}
	t.Fatalf("registration of %s never finished", regID)
	return nil
}

func regState(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	rs, ok := m["registrationState"].(map[string]any)
	if !ok {
		t.Fatalf("no registrationState in %v", m)
	}
	return rs
}

// hubToken builds an upstream-style device token.
func hubToken(e *Emulator, key, hub, device string, lifetime time.Duration) string {
	raw, _ := base64.StdEncoding.DecodeString(key)
	return BuildSAS(raw, strings.ToLower(hub+"/devices/"+device), e.Now().Add(lifetime).Unix(), "")
}

func policyToken(e *Emulator, hub string) string {
	raw, _ := base64.StdEncoding.DecodeString(e.PolicyKey(hub, "iothubowner"))
	return BuildSAS(raw, hub, e.Now().Add(time.Hour).Unix(), "iothubowner")
}

func itoa(i int) string { return strconv.Itoa(i) }

// requireTool finds an external program; a missing one fails the test (.ci/run installs
// every tool the tests use).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH (.ci/run installs it): %v", name, err)
	}
	return p
}

func wantStatus(t *testing.T, r resp, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body %s", r.status, want, r.body)
	}
}

// rsaStoragePublic returns a TPM2B_PUBLIC of an RSA-2048 storage key (EK/SRK shape) with
// a software-generated modulus.
func rsaStoragePublic(t *testing.T) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var p []byte
	p = binary.BigEndian.AppendUint16(p, tpmAlgRSA)
	p = binary.BigEndian.AppendUint16(p, tpmAlgSHA256)
	p = binary.BigEndian.AppendUint32(p, 0x00030472)
	p = append(p, 0, 0)                              // authPolicy
	p = binary.BigEndian.AppendUint16(p, tpmAlgAES)  // symmetric
	p = binary.BigEndian.AppendUint16(p, 128)        // keyBits
	p = binary.BigEndian.AppendUint16(p, 0x0043)     // CFB
	p = binary.BigEndian.AppendUint16(p, tpmAlgNull) // scheme
	p = binary.BigEndian.AppendUint16(p, 2048)       // keyBits
	p = binary.BigEndian.AppendUint32(p, 0)          // exponent (default)
	p = append(p, tpm2b(k.PublicKey.N.Bytes())...)
	return tpm2b(p)
}
