package sas_test

// The emulator's verifier is written independently of this package on purpose
// (architecture.md §7): a token it accepts is one a strict hub accepts. Only this test
// imports it; the sdk itself stays on the standard library.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/iotbroker/aziot/emulator"
	"github.com/iotbroker/aziot/sdk/sas"
)

func signer(key []byte) sas.SignFunc {
	return func(_ context.Context, data []byte) ([]byte, error) {
		m := hmac.New(sha256.New, key)
		m.Write(data)
		return m.Sum(nil), nil
	}
}

func TestEmulatorVerifierAcceptsOurTokens(t *testing.T) {
	key := []byte("module-primary-key-example-32byt")
	other := []byte("another-key-of-thirty-two-bytes!")
	now := time.Unix(1800000000, 0)
	for _, tc := range []struct{ audience, skn string }{
		{sas.DeviceAudience("MyHub.azure-devices.net", "Device-01"), ""},
		{sas.DeviceAudience("localhost:8443", "dev with space=1"), ""},
		{sas.ModuleAudience("myhub.azure-devices.net", "device-01", "$edgeAgent"), ""},
		{sas.DPSAudience("0ne00000A0A", "reg-01"), sas.DPSKeyName},
	} {
		tok, err := sas.New(context.Background(), tc.audience, now.Add(sas.Lifetime), tc.skn, signer(key))
		if err != nil {
			t.Fatal(err)
		}
		p, err := emulator.ParseSAS(tok)
		if err != nil {
			t.Fatalf("%s: emulator cannot parse %q: %v", tc.audience, tok, err)
		}
		if !strings.EqualFold(p.SR, tc.audience) {
			t.Errorf("decoded sr %q, want %q (case-insensitively)", p.SR, tc.audience)
		}
		if p.SKN != tc.skn || p.HasSKN != (tc.skn != "") {
			t.Errorf("skn %q/%v, want %q", p.SKN, p.HasSKN, tc.skn)
		}
		if !p.VerifyKey(key) || !p.VerifyAnyKey("", base64.StdEncoding.EncodeToString(other), base64.StdEncoding.EncodeToString(key)) {
			t.Errorf("%s: emulator rejects our signature", tc.audience)
		}
		if p.VerifyKey(other) {
			t.Errorf("%s: verified with the wrong key", tc.audience)
		}
		if p.Expired(now) || !p.Expired(now.Add(sas.Lifetime)) || !p.Expired(now.Add(time.Hour)) {
			t.Errorf("%s: expiry %d not now+30 s", tc.audience, p.Expiry)
		}
		// Tampering with any signed field breaks the signature.
		for _, bad := range []string{
			strings.Replace(tok, "sr=", "sr=x", 1),
			strings.Replace(tok, "&se=", "&se=1", 1),
		} {
			q, err := emulator.ParseSAS(bad)
			if err != nil {
				t.Fatalf("parse tampered token: %v", err)
			}
			if q.VerifyKey(key) {
				t.Errorf("tampered token verified: %s", bad)
			}
		}
		sigAt := strings.Index(tok, "&sig=") + len("&sig=")
		flipped := tok[:sigAt] + flip(tok[sigAt]) + tok[sigAt+1:]
		if q, err := emulator.ParseSAS(flipped); err == nil && q.VerifyKey(key) {
			t.Errorf("token with a changed signature verified: %s", flipped)
		}
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}
