package sas

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// hmacSigner is what keyd's SignHMAC does, in process.
func hmacSigner(t *testing.T, b64Key string) SignFunc {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(b64Key)
	if err != nil {
		t.Fatal(err)
	}
	return func(_ context.Context, data []byte) ([]byte, error) {
		m := hmac.New(sha256.New, key)
		m.Write(data)
		return m.Sum(nil), nil
	}
}

const (
	deviceKey = "dGhpcy1pcy1hLXRlc3Qta2V5LWZvci1kcHMtc2FzLXRva2Vucw=="
	moduleKey = "bW9kdWxlLXByaW1hcnkta2V5LWV4YW1wbGUtMzJieXQ="
	groupKey  = "dGhpcy1pcy1hLXRlc3QtZ3JvdXAtZW5yb2xsbWVudC1rZXktZm9yLWRwcy14eXo="
)

var se = time.Unix(1700000000, 0)

// The worked examples of cloud-hub.md §4.5 and cloud-dps.md §3.1 / §5, upstream style.
func TestUpstreamWorkedExamples(t *testing.T) {
	derived := func() string { // cloud-dps.md §5: the group-derived device key
		m := hmac.New(sha256.New, []byte("this-is-a-test-group-enrollment-key-for-dps-xyz"))
		m.Write([]byte("device-01"))
		return base64.StdEncoding.EncodeToString(m.Sum(nil))
	}()
	if derived != "KKGnuSFJg4DnOA/MyL2hvkEoM2PmZPMmN1xq4OS32VE=" {
		t.Fatalf("derived group key %s", derived)
	}
	for _, tc := range []struct {
		name, audience, skn, key, want string
	}{
		{"hub device", DeviceAudience("myhub.azure-devices.net", "device-01"), "", deviceKey,
			"SharedAccessSignature sr=myhub.azure-devices.net/devices/device-01&sig=ZlMbcCvG7waL%2Bjep99tfZSDlcXX7KInyiact5CDFGwc%3D&se=1700000000"},
		{"hub device, upper case lowered", DeviceAudience("MyHub.azure-devices.net", "Device-01"), "", deviceKey,
			"SharedAccessSignature sr=myhub.azure-devices.net/devices/device-01&sig=ZlMbcCvG7waL%2Bjep99tfZSDlcXX7KInyiact5CDFGwc%3D&se=1700000000"},
		{"dps individual", DPSAudience("0ne00000A0A", "device-01"), DPSKeyName, deviceKey,
			"SharedAccessSignature sr=0ne00000a0a/registrations/device-01&sig=x%2FfAun6AX075Kbxa97sEYiXoHvmJhlQNKCTgusFkYX8%3D&se=1700000000&skn=registration"},
		{"dps group-derived", DPSAudience("0ne00000A0A", "device-01"), DPSKeyName, derived,
			"SharedAccessSignature sr=0ne00000a0a/registrations/device-01&sig=hBUfgX1xvikuIVkOxuoWkX1nd%2FCewDpy3wWldF96os4%3D&se=1700000000&skn=registration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := New(context.Background(), tc.audience, se, tc.skn, hmacSigner(t, tc.key))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("token\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// Other clients' sr encodings (cloud-hub.md §4.5, cloud-dps.md §3.1): the signature covers
// the sr text exactly as sent.
func TestSignResourceOtherEncodings(t *testing.T) {
	for _, tc := range []struct{ sr, key, sig string }{
		{"myhub.azure-devices.net%2Fdevices%2Fdevice-01", deviceKey, "S8g+3RnFUetRjBz8doGYWtWNOPEcGOs+N+9bDoshm6k="},
		{"myhub.azure-devices.net%2Fdevices%2Fdevice-01%2Fmodules%2Fmymodule", moduleKey, "h2x38PZ7FpjsjfMogqYwz3tUjuOuhjj2KpmclEoduJs="},
		{"0ne00000A0A/registrations/device-01", deviceKey, "K7/gBdvE71PC1FRvL+wqE7+C0XZPEfxGDaXAcgh3wBI="},
		{"0ne00000A0A%2fregistrations%2fdevice-01", deviceKey, "yvzFGHJkMoZHlh7fxyQ5DaY6AnegqoZPXWjLrYav264="},
	} {
		tok, err := SignResource(context.Background(), tc.sr, se, "", hmacSigner(t, tc.key))
		if err != nil {
			t.Fatal(err)
		}
		if got := base64.StdEncoding.EncodeToString(tok.Signature); got != tc.sig {
			t.Errorf("sr %s: sig %s, want %s", tc.sr, got, tc.sig)
		}
	}
	if got := string(StringToSign("a/b", 1700000000)); got != "a/b\n1700000000" {
		t.Errorf("string-to-sign %q", got)
	}
}

func TestResourceEncoding(t *testing.T) {
	for in, want := range map[string]string{
		"hub/devices/dev-01":          "hub/devices/dev-01",
		"Hub:8443/Devices/A B":        "hub:8443/devices/a%20b",
		"h/devices/a=b?c#d":           "h/devices/a%3Db%3Fc%23d",
		"h/devices/\"<>`{}":           "h/devices/%22%3C%3E%60%7B%7D",
		"h/devices/%:@$'()!*+,;&":     "h/devices/%:@$'()!*+,;&", // upstream leaves these alone
		"h/devices/tab\there\x7f":     "h/devices/tab%09here%7F",
		"h/devices/\u00e9t\u00e9":     "h/devices/%C3%A9t%C3%A9",
		"0ne00000A0A/registrations/x": "0ne00000a0a/registrations/x",
	} {
		if got := Resource(in); got != want {
			t.Errorf("Resource(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSignerErrors(t *testing.T) {
	boom := errors.New("keyd: 404 no such key")
	_, err := New(context.Background(), "h/devices/d", se, "", func(context.Context, []byte) ([]byte, error) { return nil, boom })
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "h/devices/d") {
		t.Fatalf("signer error not wrapped with context: %v", err)
	}
	if _, err := New(context.Background(), "h/devices/d", se, "", func(context.Context, []byte) ([]byte, error) { return nil, nil }); err == nil {
		t.Fatal("empty signature accepted")
	}
	if _, err := New(context.Background(), "h/devices/d", se, "", nil); err == nil {
		t.Fatal("nil signer accepted")
	}
}
