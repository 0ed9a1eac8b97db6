package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
)

type testKey struct {
	priv string // PEM
	pub  string // PEM
}

func newTestKey(t testing.TB) testKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return testKey{
		priv: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		pub:  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
	}
}

const bundleDeny = `package aziot.authz

import rego.v1

deny contains "bundle says no" if input.caller.uid == 1001
`

// bundleSpec builds a bundle; mutate runs after signing (to tamper).
type bundleSpec struct {
	revision string
	modules  map[string]string
	data     map[string]any
	key      *testKey
	kid      string
	alg      string
	mutate   func(*bundle.Bundle)
}

func buildBundle(t testing.TB, s bundleSpec) []byte {
	t.Helper()
	b := bundle.Bundle{Manifest: bundle.Manifest{Revision: s.revision}, Data: s.data}
	if b.Data == nil {
		b.Data = map[string]any{}
	}
	b.Manifest.Init()
	for _, name := range sortedKeys(s.modules) {
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: "/" + name, Path: "/" + name, Raw: []byte(s.modules[name])})
	}
	if s.key != nil {
		alg := s.alg
		if alg == "" {
			alg = "ES256"
		}
		if err := b.GenerateSignature(bundle.NewSigningConfig(s.key.priv, alg, ""), s.kid, false); err != nil {
			t.Fatal(err)
		}
	}
	if s.mutate != nil {
		s.mutate(&b)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func trusted(k testKey) map[string]*KeyConfig {
	return map[string]*KeyConfig{"ops": {Key: k.pub, Algorithm: "ES256"}}
}

func TestReadBundleFailsClosed(t *testing.T) {
	ops, rogue := newTestKey(t), newTestKey(t)
	good := bundleSpec{revision: "7", modules: map[string]string{"authz/deny.rego": bundleDeny}, data: map[string]any{"fleet": map[string]any{"name": "a"}}, key: &ops, kid: "ops"}
	vb, err := ReadBundle(buildBundle(t, good), trusted(ops), false)
	if err != nil {
		t.Fatal(err)
	}
	if !vb.Verified || vb.KeyID != "ops" || vb.Revision != "7" || len(vb.Bundle.Modules) != 1 {
		t.Fatalf("%+v", vb)
	}
	with := func(f func(*bundleSpec)) []byte {
		s := good
		s.modules = map[string]string{"authz/deny.rego": bundleDeny}
		f(&s)
		return buildBundle(t, s)
	}
	cases := map[string][]byte{
		"unsigned":                     with(func(s *bundleSpec) { s.key = nil }),
		"no key ID":                    with(func(s *bundleSpec) { s.kid = "" }),
		"unknown key ID":               with(func(s *bundleSpec) { s.kid = "rogue" }),
		"wrong key under a trusted ID": with(func(s *bundleSpec) { s.key = &rogue }),
		"other algorithm":              with(func(s *bundleSpec) { s.alg = "ES384" }),
		"file added after signing": with(func(s *bundleSpec) {
			s.mutate = func(b *bundle.Bundle) {
				b.Modules = append(b.Modules, bundle.ModuleFile{URL: "/authz/extra.rego", Path: "/authz/extra.rego", Raw: []byte("package aziot.authz\nimport rego.v1\nallow := true\n")})
			}
		}),
		"file removed after signing": with(func(s *bundleSpec) {
			s.modules["authz/second.rego"] = "package aziot.authz\nimport rego.v1\ndeny contains \"two\" if false\n"
			s.mutate = func(b *bundle.Bundle) { b.Modules = b.Modules[:1] }
		}),
		"file changed after signing": with(func(s *bundleSpec) {
			s.mutate = func(b *bundle.Bundle) {
				b.Modules[0].Raw = []byte("package aziot.authz\nimport rego.v1\nallow := true\n")
			}
		}),
		"data changed after signing": with(func(s *bundleSpec) {
			s.mutate = func(b *bundle.Bundle) { b.Data = map[string]any{"fleet": map[string]any{"name": "b"}} }
		}),
		"verifier plugin": with(func(s *bundleSpec) {
			s.mutate = func(b *bundle.Bundle) { b.Signatures.Plugin = "lenient" }
		}),
		"two signatures": with(func(s *bundleSpec) {
			s.mutate = func(b *bundle.Bundle) {
				b.Signatures.Signatures = append(b.Signatures.Signatures, b.Signatures.Signatures[0])
			}
		}),
	}
	for name, raw := range cases {
		_, err := ReadBundle(raw, trusted(ops), false)
		var be *BundleError
		if err == nil || !errors.As(err, &be) {
			t.Errorf("%s: accepted (%v)", name, err)
			continue
		}
		t.Logf("%s: %v", name, err)
		if vb, err := ReadBundle(raw, trusted(ops), true); err != nil || vb.Verified || !vb.Forced {
			t.Errorf("%s forced: %+v %v", name, vb, err)
		}
	}
	// Never forceable: reserved data, Wasm, garbage.
	reserved := with(func(s *bundleSpec) { s.data = map[string]any{"aziot": map[string]any{"principals": map[string]any{}}} })
	for name, raw := range map[string][]byte{"reserved data": reserved, "not gzip": []byte("plain text")} {
		if _, err := ReadBundle(raw, trusted(ops), true); err == nil {
			t.Errorf("%s: accepted with force", name)
		}
	}
	if _, err := ReadBundle(buildBundle(t, good), nil, false); err == nil {
		t.Error("accepted without trusted keys")
	}
}

func TestCompareRevisions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"9", "10", -1}, {"10", "9", 1}, {"1.2.9", "1.2.10", -1}, {"v2", "v10", -1}, {"7", "7", 0},
		{"2024-05-01T10:00:00Z", "2024-06-01T00:00:00Z", -1}, {"007", "7", 0}, {"", "1", -1}, {"1a", "1b", -1}, {"1", "1.0", -1},
	} {
		if got := CompareRevisions(c.a, c.b); got != c.want {
			t.Errorf("CompareRevisions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestInstallBundle(t *testing.T) {
	ops := newTestKey(t)
	dir := filepath.Join(t.TempDir(), "policy")
	spec := func(rev string) []byte {
		return buildBundle(t, bundleSpec{revision: rev, modules: map[string]string{"deny.rego": bundleDeny + "# rev " + rev + "\n"}, key: &ops, kid: "ops"})
	}
	five := spec("5")
	if _, err := InstallBundle(dir, five, trusted(ops), false); err != nil {
		t.Fatal(err)
	}
	ib, err := ReadInstalled(dir)
	if err != nil || ib.Record.Revision != "5" || ib.Record.Forced || !ib.Record.Verified || ib.Record.KeyID != "ops" {
		t.Fatalf("%+v %v", ib, err)
	}
	if _, err := InstallBundle(dir, spec("4"), trusted(ops), false); err == nil || !strings.Contains(err.Error(), "lower") {
		t.Fatalf("lower revision: %v", err)
	}
	if _, err := InstallBundle(dir, buildBundle(t, bundleSpec{revision: "5", modules: map[string]string{"x.rego": bundleDeny}, key: &ops, kid: "ops"}), trusted(ops), false); err == nil {
		t.Fatal("same revision, other content accepted")
	}
	if rec, err := InstallBundle(dir, five, trusted(ops), false); err != nil || rec.Revision != "5" {
		t.Fatalf("reinstall: %+v %v", rec, err)
	}
	if _, err := InstallBundle(dir, spec("10"), trusted(ops), false); err != nil {
		t.Fatal(err)
	}
	unsigned := buildBundle(t, bundleSpec{revision: "11", modules: map[string]string{"deny.rego": bundleDeny}})
	if _, err := InstallBundle(dir, unsigned, trusted(ops), false); err == nil {
		t.Fatal("unsigned accepted")
	}
	if rec, err := InstallBundle(dir, spec("3"), trusted(ops), true); err != nil || !rec.Forced || rec.Revision != "3" {
		t.Fatalf("forced downgrade: %+v %v", rec, err)
	}
	if rec, err := InstallBundle(dir, unsigned, trusted(ops), true); err != nil || !rec.Forced || rec.Verified {
		t.Fatalf("forced unsigned: %+v %v", rec, err)
	}
	// Only the active and the previous version are kept.
	entries, _ := os.ReadDir(filepath.Join(dir, "versions"))
	if len(entries) != 2 {
		t.Fatalf("%d versions kept", len(entries))
	}
	// A tampered archive under the active link is refused on read.
	ib, _ = ReadInstalled(dir)
	os.WriteFile(filepath.Join(ib.Dir, "bundle.tar.gz"), spec("12"), 0o644)
	if _, err := ReadInstalled(dir); err == nil {
		t.Fatal("digest mismatch not seen")
	}
}

// The service side: an installed bundle is activated by the watcher, a lower one refused
// unless the install was forced.
func TestManagerInstalledBundle(t *testing.T) {
	ops := newTestKey(t)
	bdir := filepath.Join(t.TempDir(), "policy")
	e, _ := NewEngine(nil, principals())
	logs := &syncBuf{}
	m := NewManager(e, ManagerOptions{Service: "keyd", BundleDir: bdir, StateDir: t.TempDir(), Keys: trusted(ops), Debounce: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Cleanup(func() { cancel(); m.Wait() })
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	raw := buildBundle(t, bundleSpec{revision: "2", modules: map[string]string{"deny.rego": bundleDeny}, key: &ops, kid: "ops"})
	if _, err := InstallBundle(bdir, raw, trusted(ops), false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, func() bool { return e.Revision() == "2" }, "bundle activated")
	if signAllowed(t, e, 1001) {
		t.Fatal("bundle rule not in force")
	}
	st := m.Status()
	if st.Revision != "2" || st.Layers["bundle"].Meta["key_id"] != "ops" {
		t.Fatalf("status %+v", st)
	}
	// A forced downgrade is taken.
	raw1 := buildBundle(t, bundleSpec{revision: "1", modules: map[string]string{"allow.rego": "package aziot.authz\nimport rego.v1\n"}, key: &ops, kid: "ops"})
	if _, err := InstallBundle(bdir, raw1, trusted(ops), true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, func() bool { return e.Revision() == "1" }, "forced downgrade activated")
	if !signAllowed(t, e, 1001) {
		t.Fatal("old bundle rule still in force")
	}
}

// Polling a bundle server with OPA's protocol: ETag and 304, signature before activation,
// lower revisions refused.
func TestManagerPollsBundleServer(t *testing.T) {
	ops, rogue := newTestKey(t), newTestKey(t)
	var mu sync.Mutex
	current := buildBundle(t, bundleSpec{revision: "3", modules: map[string]string{"deny.rego": bundleDeny}, key: &ops, kid: "ops"})
	etag := `"v3"`
	var hits, notModified atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/bundles/fleet.tar.gz" || r.Header.Get("Authorization") != "Bearer t0ken" {
			http.Error(w, "no", http.StatusNotFound)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("If-None-Match") == etag {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/gzip")
		w.Write(current)
	}))
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("not loopback: %s", srv.URL)
	}
	serve := func(raw []byte, tag string) {
		mu.Lock()
		current, etag = raw, tag
		mu.Unlock()
	}
	e, _ := NewEngine(nil, principals())
	state := t.TempDir()
	m := NewManager(e, ManagerOptions{Service: "keyd", StateDir: state, Keys: trusted(ops),
		Poll: &PollOptions{URL: srv.URL + "/bundles/fleet.tar.gz", MinDelay: 20 * time.Millisecond, MaxDelay: 40 * time.Millisecond, Headers: map[string]string{"Authorization": "Bearer t0ken"}},
		Log:  slog.New(slog.NewTextHandler(&syncBuf{}, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Cleanup(func() { cancel(); m.Wait() })
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, func() bool { return e.Revision() == "3" }, "polled bundle activated")
	eventually(t, 2*time.Second, func() bool { return notModified.Load() >= 2 }, "ETag sent")

	// Wrongly signed, then lower: refused, revision 3 stays.
	serve(buildBundle(t, bundleSpec{revision: "4", modules: map[string]string{"x.rego": "package aziot.authz\n"}, key: &rogue, kid: "ops"}), `"v4-rogue"`)
	eventually(t, 2*time.Second, func() bool {
		st := m.Status()
		return st.LastError != nil && strings.Contains(st.LastError.Message, "signature")
	}, "wrong signature refused")
	serve(buildBundle(t, bundleSpec{revision: "2", modules: map[string]string{"x.rego": "package aziot.authz\n"}, key: &ops, kid: "ops"}), `"v2"`)
	eventually(t, 2*time.Second, func() bool {
		st := m.Status()
		return st.LastError != nil && strings.Contains(st.LastError.Message, "lower")
	}, "lower revision refused")
	if e.Revision() != "3" || signAllowed(t, e, 1001) {
		t.Fatal("refused bundle activated")
	}
	serve(buildBundle(t, bundleSpec{revision: "5", modules: map[string]string{"x.rego": "package aziot.authz\n"}, key: &ops, kid: "ops"}), `"v5"`)
	eventually(t, 2*time.Second, func() bool { return e.Revision() == "5" }, "new revision activated")
	if !signAllowed(t, e, 1001) {
		t.Fatal("revision 5 not in force")
	}
	// The polled bundle survives a restart (verified again). The poller saves the bundle
	// right after activating it: wait for it to finish before restarting.
	cancel()
	m.Wait()
	e2, _ := NewEngine(nil, principals())
	m2 := NewManager(e2, ManagerOptions{Service: "keyd", StateDir: state, Keys: trusted(ops), Log: slog.New(slog.NewTextHandler(&syncBuf{}, nil))})
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if err := m2.Start(ctx2); err != nil || e2.Revision() != "5" {
		t.Fatalf("restart: %v, revision %q", err, e2.Revision())
	}
}

// tarGz writes files (name, content pairs) as a bundle archive.
func tarGz(t testing.TB, files ...[2][]byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: string(f[0]), Mode: 0o644, Size: int64(len(f[1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f[1])
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// FuzzReadBundle fuzzes the files of a bundle (signature block, manifest, module, data)
// around a genuinely signed one: whatever the fuzzer does, a bundle is accepted without
// force only if its signature verifies over exactly its files.
func FuzzReadBundle(f *testing.F) {
	k := newTestKey(f)
	module := []byte(bundleDeny)
	signed := buildBundle(f, bundleSpec{revision: "1", modules: map[string]string{"a.rego": bundleDeny}, key: &k, kid: "ops"})
	var sig, manifest []byte
	zr, err := gzip.NewReader(bytes.NewReader(signed))
	if err != nil {
		f.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(tr)
		switch strings.TrimPrefix(h.Name, "/") {
		case ".signatures.json":
			sig = b
		case ".manifest":
			manifest = b
		}
	}
	if sig == nil || manifest == nil {
		f.Fatal("signed bundle without signature or manifest")
	}
	f.Add(sig, manifest, module, []byte("{}"))
	f.Add([]byte(`{"signatures":[]}`), manifest, module, []byte(`{"aziot":{"principals":{}}}`))
	keys := trusted(k)
	f.Fuzz(func(t *testing.T, sig, manifest, module, data []byte) {
		raw := tarGz(t, [2][]byte{[]byte("/.signatures.json"), sig}, [2][]byte{[]byte("/.manifest"), manifest},
			[2][]byte{[]byte("/a.rego"), module}, [2][]byte{[]byte("/data.json"), data})
		vb, err := ReadBundle(raw, keys, false)
		if err != nil {
			return
		}
		if !vb.Verified || vb.Forced {
			t.Fatal("unverified bundle accepted without force")
		}
		if len(vb.Bundle.Modules) != 1 || !bytes.Equal(vb.Bundle.Modules[0].Raw, []byte(bundleDeny)) {
			t.Fatalf("accepted a module that was not signed: %q", vb.Bundle.Modules)
		}
	})
}

func FuzzParseSignatureBlock(f *testing.F) {
	f.Add([]byte(`{"signatures":["eyJhbGciOiJFUzI1NiJ9.e30.sig"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSignatureBlock(b)
		if err != nil {
			return
		}
		if checkSignatureBlock(s, map[string]*KeyConfig{}) == nil {
			t.Fatal("a signature block passed with no trusted key")
		}
	})
}
