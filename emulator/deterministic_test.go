package emulator

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDeterministicMode: an injected clock, a seed and fixed operation IDs make runs
// repeatable.
func TestDeterministicMode(t *testing.T) {
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	run := func() (string, string, string) {
		e := startEmu(t, Config{Seed: 42, FixedOperationIDs: true, Clock: func() time.Time { return base }})
		_ = e.AddEnrollment(Enrollment{Attestation: AttestSymmetric, ID: "device-01"}) // keys from the seed
		en, _ := e.Enrollment("", false, "device-01")
		c := newClient(t, e, nil, nil)
		tok := BuildSAS(mustB64(t, en.PrimaryKey), "0ne00000a0a/registrations/device-01", base.Add(time.Minute).Unix(), "registration")
		r := c.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), map[string]string{"Authorization": tok}, regBody("device-01"))
		wantStatus(t, r, 202)
		op := r.json(t)["operationId"].(string)
		p := c.do("GET", opURL(e, testScope, "device-01", op, "2021-06-01"), map[string]string{"Authorization": tok}, nil)
		return en.PrimaryKey, op, regState(t, p.json(t))["createdDateTimeUtc"].(string)
	}
	k1, op1, ts1 := run()
	k2, op2, ts2 := run()
	if k1 != k2 || op1 != op2 || ts1 != ts2 {
		t.Fatalf("not deterministic: %s/%s %s/%s %s/%s", k1, k2, op1, op2, ts1, ts2)
	}
	if op1 != "4.0000000000000000.00000000-0000-4000-8000-000000000001" || ts1 != "2030-01-02T03:04:05.0000000Z" {
		t.Fatalf("fixed operation ID %s / injected clock %s", op1, ts1)
	}
	// A token valid against the injected clock (2030) but expired in real time is fine,
	// and one expired against the injected clock is not.
	e := startEmu(t, Config{Clock: func() time.Time { return base }})
	_ = e.AddEnrollment(Enrollment{Attestation: AttestSymmetric, ID: "device-01", PrimaryKey: testKey})
	old := BuildSAS(mustB64(t, testKey), "0ne00000a0a/registrations/device-01", time.Now().Add(time.Hour).Unix(), "registration")
	wantStatus(t, newClient(t, e, nil, nil).do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), map[string]string{"Authorization": old}, regBody("device-01")), 401)
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestESTPlainHTTPListener(t *testing.T) {
	e := startEmu(t, Config{ESTPlainAddr: "127.0.0.1:0"})
	if !strings.HasPrefix(e.ESTPlainURL(), "http://") {
		t.Fatal("no plain listener")
	}
	res, err := http.Get(e.ESTPlainURL() + "/.well-known/est/cacerts")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != pkcs7CertsOnly {
		t.Fatalf("plain cacerts: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
}

// TestTPMBlobLayout checks the authenticationKey layout of cloud-dps.md §6 without a TPM
// (the swtpm test proves a real TPM accepts it).
func TestTPMBlobLayout(t *testing.T) {
	ek := rsaStoragePublic(t)
	blob, err := MakeTPMAuthenticationKey(ek, ek, make([]byte, 32), func(n int) []byte { return make([]byte, n) })
	if err != nil {
		t.Fatal(err)
	}
	parts, err := SplitTPMAuthenticationKey(blob)
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{2 + 52, 2 + 256, 2 + 2 + 32 + 2 + 32 + 2 + 2 + 2 + 32 + 2 + 0 + 2 + 2, 2 + 256, 2 + 48, 2}
	for i, want := range sizes {
		if i == 2 {
			continue // TPM2B_PRIVATE size depends on the sensitive area; checked by swtpm
		}
		if len(parts[i]) != want {
			t.Errorf("part %d: %d bytes, want %d", i+1, len(parts[i]), want)
		}
	}
	if pub := parts[4]; pub[2] != 0x00 || pub[3] != 0x08 || pub[6] != 0x00 || pub[7] != 0x04 || pub[8] != 0x04 || pub[9] != 0x40 {
		t.Fatalf("public area %x", pub[:12])
	}
	if _, err := MakeTPMAuthenticationKey([]byte{1, 2, 3}, ek, make([]byte, 32), func(n int) []byte { return make([]byte, n) }); err == nil {
		t.Fatal("garbage EK accepted")
	}
}

// TestDefaults: Retry-After defaults to 3 seconds, the value the real service sends.
func TestDefaults(t *testing.T) {
	e, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	_ = e.AddEnrollment(Enrollment{Attestation: AttestSymmetric, ID: "device-01", PrimaryKey: testKey})
	r := newClient(t, e, nil, nil).do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"),
		map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Minute)}, regBody("device-01"))
	wantStatus(t, r, 202)
	if r.header.Get("Retry-After") != "3" {
		t.Fatalf("default Retry-After %q", r.header.Get("Retry-After"))
	}
	if len(e.HubNames()) != 1 || !strings.HasPrefix(e.HubNames()[0], "localhost:") {
		t.Fatalf("default hub %v", e.HubNames())
	}
}
