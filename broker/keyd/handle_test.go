package keyd

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
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

// splitHandle decodes the sr and sig parts of s as validate reads them (the last of
// each wins); ok is false when validate would refuse the layout.
func splitHandle(s string) (sr, sig []byte, ok bool) {
	var haveSR, haveSig bool
	for _, part := range strings.Split(s, "&") {
		var err error
		switch {
		case strings.HasPrefix(part, "sr="):
			sr, err = base64.StdEncoding.DecodeString(part[3:])
			haveSR = true
		case strings.HasPrefix(part, "sig="):
			sig, err = base64.StdEncoding.DecodeString(part[4:])
			haveSig = true
		}
		if err != nil {
			return nil, nil, false
		}
	}
	return sr, sig, haveSR && haveSig
}

// issued is what a test handed out: each signed sr with the handle it stands for.
type issued struct {
	handles  []string
	accepted map[string]*Handle // by decoded sr
	nested   map[string]bool    // signed, but refused with errNested
}

func issueAll(t testing.TB, h *handles) issued {
	t.Helper()
	is := issued{accepted: map[string]*Handle{}, nested: map[string]bool{}}
	add := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		sr, _, ok := splitHandle(s)
		if !ok {
			t.Fatalf("issued handle %q does not split", s)
		}
		got, err := h.validate(s)
		switch {
		case errors.Is(err, errNested):
			is.nested[string(sr)] = true
		case err != nil:
			t.Fatalf("issued handle %q refused: %v", s, err)
		default:
			is.accepted[string(sr)] = got
		}
		is.handles = append(is.handles, s)
		return s
	}
	add(h.issue(KindKey, "k", "", nil))
	add(h.issue(KindKeyPair, "device-id", "", nil))
	base := add(h.issue(KindKey, "m", "", nil))
	derived := add(h.issue(KindDerived, "", base, []byte{1, 2}))
	add(h.issue(KindDerived, "", derived, []byte{3}))
	return is
}

// tampered returns s with one bit of its decoded sr (or sig) flipped, re-encoded.
func tampered(t testing.TB, s string, inSig bool, i int) string {
	t.Helper()
	sr, sig, ok := splitHandle(s)
	if !ok {
		t.Fatalf("handle %q does not split", s)
	}
	b := sr
	if inSig {
		b = sig
	}
	b = append([]byte(nil), b...)
	b[i%len(b)] ^= 1 << (i % 8)
	if inSig {
		sig = b
	} else {
		sr = b
	}
	return "sr=" + base64.StdEncoding.EncodeToString(sr) + "&sig=" + base64.StdEncoding.EncodeToString(sig)
}

// checkValidate is the property every input must satisfy: validate does not panic,
// refuses only with its documented errors, and accepts only an sr that keyd signed,
// with that sr's signature, naming what keyd issued it for.
func checkValidate(t *testing.T, h *handles, is issued, s string) {
	got, err := h.validate(s)
	if err != nil {
		if !errors.Is(err, errInvalidHandle) && !errors.Is(err, errNested) {
			t.Fatalf("validate(%q): undocumented error %v", s, err)
		}
		if errors.Is(err, errNested) {
			if sr, _, ok := splitHandle(s); !ok || !is.nested[string(sr)] {
				t.Fatalf("validate(%q): errNested for a handle keyd did not sign as nested", s)
			}
		}
		return
	}
	sr, sig, ok := splitHandle(s)
	if !ok {
		t.Fatalf("validate(%q) accepted a handle without one sr and one sig: %+v", s, got)
	}
	want, signed := is.accepted[string(sr)]
	if !signed {
		t.Fatalf("validate(%q) accepted an sr keyd never signed: %s", s, sr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("validate(%q) = %+v, keyd issued %+v", s, got, want)
	}
	if got.Kind != KindDerived && got.ID == "" {
		t.Fatalf("validate(%q) accepted a handle naming no ID", s)
	}
	// The canonical encoding of what was accepted is the same handle.
	canon := "sr=" + base64.StdEncoding.EncodeToString(sr) + "&sig=" + base64.StdEncoding.EncodeToString(sig)
	again, err := h.validate(canon)
	if err != nil || !reflect.DeepEqual(again, got) {
		t.Fatalf("validate(%q) = %+v, but its re-encoding %q gives %+v, %v", s, got, canon, again, err)
	}
}

func TestHandleTamperedRefused(t *testing.T) {
	h := testHandles(t)
	is := issueAll(t, h)
	for _, s := range is.handles {
		sr, sig, _ := splitHandle(s)
		for i := range len(sr) {
			if _, err := h.validate(tampered(t, s, false, i)); !errors.Is(err, errInvalidHandle) {
				t.Fatalf("bit %d of sr %s flipped: got %v, want errInvalidHandle", i, sr, err)
			}
		}
		for i := range len(sig) * 8 {
			if _, err := h.validate(tampered(t, s, true, i)); !errors.Is(err, errInvalidHandle) {
				t.Fatalf("bit %d of the sig of %s flipped: got %v, want errInvalidHandle", i, sr, err)
			}
		}
	}
	// Another handle's signature does not carry over.
	sr0, _, _ := splitHandle(is.handles[0])
	_, sig1, _ := splitHandle(is.handles[1])
	swapped := "sr=" + base64.StdEncoding.EncodeToString(sr0) + "&sig=" + base64.StdEncoding.EncodeToString(sig1)
	if _, err := h.validate(swapped); !errors.Is(err, errInvalidHandle) {
		t.Fatalf("a handle with another handle's sig: got %v, want errInvalidHandle", err)
	}
}

// FuzzHandleValidate: on any input, validate keeps the property of checkValidate. The
// seeds include tampered handles, so even a plain go test run catches a validate that
// stops checking signatures.
func FuzzHandleValidate(f *testing.F) {
	h := testHandles(f)
	is := issueAll(f, h)
	good := is.handles[0]
	for _, s := range is.handles {
		f.Add(s)
		f.Add(tampered(f, s, false, 20))
		f.Add(tampered(f, s, false, 100))
		f.Add(tampered(f, s, true, 3))
		// Extra parts are ignored; the last sr and sig win.
		f.Add("x=1&" + s + "&y")
		f.Add("sr=e30=&sig=AAAA&" + s)
	}
	for _, s := range []string{"", "sr=&sig=", "sr=e30=&sig=AAAA", good[:len(good)/2], "sig=x&sr=y&sr=" + good} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkValidate(t, h, is, s)
	})
}

// BenchmarkHandleValidate is the cost every handle operation pays before its decision.
func BenchmarkHandleValidate(b *testing.B) {
	h := testHandles(b)
	s, err := h.issue(KindKey, "device-id", "", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := h.validate(s); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzPlainSR: the decoder-free reading of a signed record agrees with the JSON decoder
// whenever it accepts one.
func FuzzPlainSR(f *testing.F) {
	for _, s := range []string{
		`{"key_id":{"Key":"k"},"nonce":"AAAA"}`,
		`{"key_id":{"KeyPair":"device-id"},"nonce":"AAAA"}`,
		`{"key_id":{"Key":"a\"b"},"nonce":"AAAA"}`,
		`{"key_id":{"Key":"ключ"},"nonce":"x"}`,
		`{"key_id":{"Key":"k"},"nonce":"A"}trailing`,
		`{"key_id":{"Derived":["sr=x",[1]]},"nonce":"AAAA"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, sr []byte) {
		kind, id, ok := plainSR(sr)
		if !ok {
			return
		}
		var parsed srJSON
		if err := json.Unmarshal(sr, &parsed); err != nil || len(parsed.KeyID) != 1 {
			t.Fatalf("plainSR accepted %q, the decoder did not: %v", sr, err)
		}
		raw, found := parsed.KeyID[map[KeyKind]string{KindKey: "Key", KindKeyPair: "KeyPair"}[kind]]
		var want string
		if !found || json.Unmarshal(raw, &want) != nil || want != id {
			t.Fatalf("plainSR(%q) = %v %q; decoder %s", sr, kind, id, raw)
		}
	})
}
