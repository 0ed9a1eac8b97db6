package p11uri

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want URI
		err  string
	}{
		{in: "pkcs11:token=Key%20pairs?pin-value=1234",
			want: URI{Token: "Key pairs", HasToken: true, PIN: "1234", HasPIN: true}},
		{in: "pkcs11:slot-id=7;token=ignored;object=device%2Did",
			want: URI{SlotID: 7, HasSlotID: true, Token: "ignored", HasToken: true, Object: "device-id", HasObject: true}},
		{in: "pkcs11:token=t;object=;id=%01;manufacturer=x?pin-source=file:/x&pin-value=a%26b",
			want: URI{Token: "t", HasToken: true, HasObject: true, PIN: "a&b", HasPIN: true}},
		{in: "pkcs11:token=a+b", want: URI{Token: "a+b", HasToken: true}},
		{in: "file:///x", err: `must start with "pkcs11:"`},
		{in: "pkcs11:", err: "needs a slot-id or a token"},
		{in: "pkcs11:object=x", err: "needs a slot-id or a token"},
		{in: "pkcs11:slot-id=-1", err: "not a slot number"},
		{in: "pkcs11:slot-id=x1", err: "not a slot number"},
		{in: "pkcs11:token=%zz", err: "invalid percent-escape"},
		{in: "pkcs11:token=%4", err: "truncated"},
		{in: "pkcs11:token", err: "has no value"},
		{in: "pkcs11:token=t?pin-value=se%cret", err: "pin-value is not validly percent-encoded"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := Parse(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Parse = %v, %v; want error %q", u, err, tc.err)
				}
				if strings.Contains(err.Error(), "se%cret") {
					t.Fatal("error shows the PIN")
				}
				return
			}
			if err != nil || *u != tc.want {
				t.Fatalf("Parse = %+v, %v; want %+v", u, err, tc.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	u := &URI{SlotID: 3, HasSlotID: true, Token: "dropped", HasToken: true, PIN: "p-1", HasPIN: true}
	o := u.WithObject("device-id")
	if got := o.Format(); got != "pkcs11:slot-id=3;object=device%2Did?pin-value=p%2D1" {
		t.Fatalf("Format = %s", got)
	}
	if got := o.String(); got != "pkcs11:slot-id=3;object=device%2Did?pin-value=REDACTED" {
		t.Fatalf("String = %s", got)
	}
	if u.HasObject {
		t.Fatal("WithObject changed its receiver")
	}
	if a, b := u.TokenKey(), (&URI{SlotID: 3, HasSlotID: true}).TokenKey(); a != b {
		t.Fatalf("token keys %q %q", a, b)
	}
}

// FuzzParse: parsing never panics, never puts the PIN in an error, and Format parses
// back to the same URI.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"pkcs11:token=a;object=b?pin-value=1234", "pkcs11:slot-id=1", "pkcs11:token=%41%zz", "pkcs11:;;?&&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Parse(s)
		if err != nil {
			if i := strings.Index(s, "pin-value="); i >= 0 {
				pin := s[i+len("pin-value="):]
				if j := strings.IndexAny(pin, "&"); j >= 0 {
					pin = pin[:j]
				}
				// Only a PIN that appears nowhere else in the input can be told apart.
				rest := s[:i] + s[i+len("pin-value=")+len(pin):]
				if len(pin) >= 4 && !strings.Contains(rest, pin) && strings.Contains(err.Error(), pin) {
					t.Fatalf("error %q shows the PIN %q", err, pin)
				}
			}
			return
		}
		back, err := Parse(u.Format())
		if err != nil {
			t.Fatalf("Format %q does not parse: %v", u.Format(), err)
		}
		want := *u
		if want.HasSlotID { // Format drops the token when a slot-id wins
			want.Token, want.HasToken = "", false
		}
		if *back != want {
			t.Fatalf("round trip %+v -> %q -> %+v", u, u.Format(), back)
		}
		if u.HasPIN && strings.Contains(u.String(), "pin-value=") && !strings.HasSuffix(u.String(), "?pin-value=REDACTED") {
			t.Fatalf("String %q does not redact the PIN", u.String())
		}
	})
}
