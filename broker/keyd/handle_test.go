package keyd

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/hsm/file"
)

func testHandles(t testing.TB) *handles {
	ks, err := hsm.NewKeystore(hsm.Config{HomedirPath: t.TempDir()}, file.Store{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &handles{keys: ks}
}

func TestHandleRoundTrip(t *testing.T) {
	h := testHandles(t)
	for _, c := range []struct {
		kind KeyKind
		id   string
	}{{KindKey, "k"}, {KindKeyPair, "device-id"}, {KindKey, "ключ \"quoted\" <&>"}} {
		s, err := h.issue(c.kind, c.id, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := h.validate(s)
		if err != nil || got.Kind != c.kind || got.ID != c.id {
			t.Fatalf("%v %q: got %+v %v", c.kind, c.id, got, err)
		}
	}
	base, _ := h.issue(KindKey, "master", "", nil)
	d, err := h.issue(KindDerived, "", base, []byte{0, 1, 255})
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.validate(d)
	if err != nil || got.Kind != KindDerived || got.ID != "master" || string(got.Data) != "\x00\x01\xff" {
		t.Fatalf("derived: %+v %v", got, err)
	}
	// keyd never issues a derived key over a derived key; one signed anyway is refused.
	nested, _ := h.issue(KindDerived, "", d, []byte{1})
	if _, err := h.validate(nested); !errors.Is(err, errNested) {
		t.Fatalf("nested: %v", err)
	}
}

func TestHandleLayoutMatchesUpstream(t *testing.T) {
	h := testHandles(t)
	s, _ := h.issue(KindKeyPair, "device-id", "", nil)
	sr, sig, ok := strings.Cut(strings.TrimPrefix(s, "sr="), "&sig=")
	if !ok {
		t.Fatalf("layout %q", s)
	}
	raw, err := base64.StdEncoding.DecodeString(sr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), `{"key_id":{"KeyPair":"device-id"},"nonce":"`) || len(raw) != len(`{"key_id":{"KeyPair":"device-id"},"nonce":""}`)+88 {
		t.Fatalf("sr = %s", raw)
	}
	if b, _ := base64.StdEncoding.DecodeString(sig); len(b) != 32 {
		t.Fatalf("sig of %d bytes", len(b))
	}
}

// FuzzHandleValidate: handle parsing never panics, and only handles keyd signed pass.
func FuzzHandleValidate(f *testing.F) {
	h := testHandles(f)
	good, _ := h.issue(KindKey, "k", "", nil)
	base, _ := h.issue(KindKey, "m", "", nil)
	derived, _ := h.issue(KindDerived, "", base, []byte{1, 2})
	for _, s := range []string{good, derived, "", "sr=&sig=", "sr=e30=&sig=AAAA", good[:len(good)/2], "sig=x&sr=y&sr=" + good} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := h.validate(s)
		if err == nil && s != good && s != derived && !strings.Contains(s, "sr=") {
			t.Fatalf("accepted %q as %+v", s, got)
		}
	})
}
