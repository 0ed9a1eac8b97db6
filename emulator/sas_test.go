package emulator

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// Worked examples of cloud-dps.md §3.1/§5 and cloud-hub.md §4.5.
func TestSASWorkedExamples(t *testing.T) {
	key, _ := base64.StdEncoding.DecodeString(testKey)
	derived, err := DeriveGroupKey(testGroup, "device-01")
	if err != nil || derived != "KKGnuSFJg4DnOA/MyL2hvkEoM2PmZPMmN1xq4OS32VE=" {
		t.Fatalf("derived group key %q, %v", derived, err)
	}
	dk, _ := base64.StdEncoding.DecodeString(derived)
	modKey, _ := base64.StdEncoding.DecodeString("bW9kdWxlLXByaW1hcnkta2V5LWV4YW1wbGUtMzJieXQ=")
	cases := []struct {
		name, header, sig string
		key               []byte
	}{
		{"dps upstream", "SharedAccessSignature sr=0ne00000a0a/registrations/device-01&sig=x%2FfAun6AX075Kbxa97sEYiXoHvmJhlQNKCTgusFkYX8%3D&se=1700000000&skn=registration", "x/fAun6AX075Kbxa97sEYiXoHvmJhlQNKCTgusFkYX8=", key},
		{"dps node", "SharedAccessSignature sr=0ne00000A0A/registrations/device-01&sig=K7%2FgBdvE71PC1FRvL%2BwqE7%2BC0XZPEfxGDaXAcgh3wBI%3D&skn=registration&se=1700000000", "K7/gBdvE71PC1FRvL+wqE7+C0XZPEfxGDaXAcgh3wBI=", key},
		{"dps c sdk", "SharedAccessSignature sr=0ne00000A0A%2fregistrations%2fdevice-01&sig=yvzFGHJkMoZHlh7fxyQ5DaY6AnegqoZPXWjLrYav264%3d&se=1700000000&skn=registration", "yvzFGHJkMoZHlh7fxyQ5DaY6AnegqoZPXWjLrYav264=", key},
		{"dps group derived", "SharedAccessSignature sr=0ne00000a0a/registrations/device-01&sig=hBUfgX1xvikuIVkOxuoWkX1nd%2FCewDpy3wWldF96os4%3D&se=1700000000&skn=registration", "hBUfgX1xvikuIVkOxuoWkX1nd/CewDpy3wWldF96os4=", dk},
		{"hub upstream", "SharedAccessSignature sr=myhub.azure-devices.net/devices/device-01&sig=ZlMbcCvG7waL%2Bjep99tfZSDlcXX7KInyiact5CDFGwc%3D&se=1700000000", "ZlMbcCvG7waL+jep99tfZSDlcXX7KInyiact5CDFGwc=", key},
		{"hub node", "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdevice-01&sig=S8g%2B3RnFUetRjBz8doGYWtWNOPEcGOs%2BN%2B9bDoshm6k%3D&se=1700000000", "S8g+3RnFUetRjBz8doGYWtWNOPEcGOs+N+9bDoshm6k=", key},
		{"hub module", "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdevice-01%2Fmodules%2Fmymodule&se=1700000000&sig=h2x38PZ7FpjsjfMogqYwz3tUjuOuhjj2KpmclEoduJs%3d", "h2x38PZ7FpjsjfMogqYwz3tUjuOuhjj2KpmclEoduJs=", modKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := ParseSAS(c.header)
			if err != nil {
				t.Fatal(err)
			}
			if got := SignSAS(c.key, tok.RawSR, tok.RawSE); got != c.sig {
				t.Fatalf("SignSAS = %s, want %s", got, c.sig)
			}
			if !tok.VerifyKey(c.key) {
				t.Fatal("worked example does not verify")
			}
			if !tok.Expired(time.Unix(1700000000, 0)) || tok.Expired(time.Unix(1699999999, 0)) {
				t.Fatal("expiry must be se <= now")
			}
			// One-character changes in sr, se or sig must fail.
			for _, mut := range []string{
				strings.Replace(c.header, "device-01", "device-02", 1),
				strings.Replace(c.header, "se=1700000000", "se=1700000001", 1),
				mutateSig(c.header),
			} {
				m, err := ParseSAS(mut)
				if err == nil && m.VerifyKey(c.key) {
					t.Fatalf("mutated token verifies: %s", mut)
				}
			}
		})
	}
}

func mutateSig(h string) string {
	i := strings.Index(h, "sig=") + 4
	b := []byte(h)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestParseSASRejects(t *testing.T) {
	for _, h := range []string{
		"",
		"Bearer x",
		"SharedAccessSignature sig=AA%3D%3D&se=1",
		"SharedAccessSignature sr=a&se=1",
		"SharedAccessSignature sr=a&sig=AA%3D%3D",
		"SharedAccessSignature sr=a&sig=AA%3D%3D&se=1&se=2",
		"SharedAccessSignature sr=a&sig=AA%3D%3D&se=1&foo=bar",
		"SharedAccessSignature sr=a&sig=AA%3D%3D&se=-1",
		"SharedAccessSignature sr=a&sig=AA%3D%3D&se=12x",
		"SharedAccessSignature sr=a&sig=!!!&se=1",
		"SharedAccessSignature sr=%zz&sig=AA%3D%3D&se=1",
		"SharedAccessSignature sr",
	} {
		if _, err := ParseSAS(h); err == nil {
			t.Errorf("ParseSAS(%q) accepted", h)
		}
	}
}

func FuzzParseSAS(f *testing.F) {
	f.Add("SharedAccessSignature sr=0ne00000a0a/registrations/device-01&sig=x%2FfAun6AX075Kbxa97sEYiXoHvmJhlQNKCTgusFkYX8%3D&se=1700000000&skn=registration")
	f.Add("SharedAccessSignature sr=a%2fb&sig=AA%3d%3d&se=1")
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := ParseSAS(h)
		if err != nil {
			return
		}
		if tok.RawSR == "" && !strings.Contains(h, "sr=") {
			t.Fatal("token without sr accepted")
		}
		_ = tok.VerifyKey([]byte("k"))
	})
}
