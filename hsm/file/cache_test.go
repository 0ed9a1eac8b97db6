package file

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/internal/testenv"
)

// counted is a Store whose file system calls are counted.
type counted struct {
	Store
	opens, stats atomic.Int64
}

func newCounted(max int) *counted {
	s := &counted{Store: New(max)}
	s.c.open = func(p string) (*os.File, error) { s.opens.Add(1); return os.Open(p) }
	s.c.stat = func(p string) (fingerprint, bool, error) { s.stats.Add(1); return statPath(p) }
	return s
}

func (s *counted) reset() { s.opens.Store(0); s.stats.Store(0) }

func (s *counted) want(t *testing.T, what string, opens, stats int64) {
	t.Helper()
	if o, st := s.opens.Load(), s.stats.Load(); o != opens || st != stats {
		t.Fatalf("%s: %d opens and %d stats, want %d and %d", what, o, st, opens, stats)
	}
	s.reset()
}

func keystore(t *testing.T, home string, b hsm.Backend) *hsm.Keystore {
	t.Helper()
	ks, err := hsm.NewKeystore(hsm.Config{HomedirPath: home}, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func keyPath(home, id string) string { return filepath.Join(home, "keys", hsm.FileName(id, ".key")) }

func ecPEM(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func mustHMAC(t *testing.T, ks *hsm.Keystore, id string, msg []byte) []byte {
	t.Helper()
	mac, err := ks.HMAC(id, msg)
	if err != nil {
		t.Fatalf("HMAC with %q: %v", id, err)
	}
	return mac
}

func wantHMACWith(t *testing.T, ks *hsm.Keystore, id string, key []byte) {
	t.Helper()
	msg := []byte("message")
	if got := mustHMAC(t, ks, id, msg); !bytes.Equal(got, hsm.HMACSHA256(key, msg)) {
		t.Fatalf("HMAC with %q is not keyed by the file's content", id)
	}
}

func wantSignedBy(t *testing.T, ks *hsm.Keystore, id string, k *ecdsa.PrivateKey) {
	t.Helper()
	d := sha256.Sum256([]byte("message"))
	sig, err := ks.SignECDSA(id, d[:])
	if err != nil {
		t.Fatalf("sign with %q: %v", id, err)
	}
	if !ecdsa.VerifyASN1(&k.PublicKey, d[:], sig) {
		t.Fatalf("signature of %q does not verify with the key in its file", id)
	}
}

func wantNotFound(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("want a not-found error, got %v", err)
	}
}

// A use of a cached key costs one stat; an uncached one reads the file once, where
// HasKey and the operation used to read it twice.
func TestKeyFileReadOncePerUse(t *testing.T) {
	home := t.TempDir()
	setup := keystore(t, home, New(16))
	if err := setup.CreateKey("k", hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	if err := setup.CreateKeyPair("ec", []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("m"))

	s := newCounted(16)
	ks := keystore(t, home, s)
	mustHMAC(t, ks, "k", []byte("m"))
	s.want(t, "uncached HMAC", 1, 0)
	mustHMAC(t, ks, "k", []byte("m"))
	s.want(t, "cached HMAC", 0, 1)
	if _, err := ks.SignECDSA("ec", d[:]); err != nil {
		t.Fatal(err)
	}
	s.want(t, "uncached ECDSA", 1, 0)
	e := s.c.get(keyPath(home, "ec"))
	if _, err := ks.SignECDSA("ec", d[:]); err != nil {
		t.Fatal(err)
	}
	s.want(t, "cached ECDSA", 0, 1)
	if s.c.get(keyPath(home, "ec")) != e || e.signer == nil {
		t.Fatal("the parsed key pair was not kept")
	}

	// GET /key/{id} (HasKey) then a sign with the handle: one read in all.
	s2 := newCounted(16)
	ks = keystore(t, home, s2)
	if err := ks.LoadKey("k"); err != nil {
		t.Fatal(err)
	}
	mustHMAC(t, ks, "k", []byte("m"))
	s2.want(t, "load then HMAC", 1, 1)
	// A missing key is one failed open, and is not cached.
	_, err := ks.HMAC("absent", []byte("m"))
	wantNotFound(t, err)
	_, err = ks.HMAC("absent", []byte("m"))
	wantNotFound(t, err)
	s2.want(t, "missing key twice", 2, 0)
}

// keyd's own writes take effect even when the file looks unchanged to stat: the entry
// is dropped by the write itself.
func TestOwnWritesInvalidate(t *testing.T) {
	home := t.TempDir()
	s := New(16)
	// A stat that cannot see any change: only the writes' own invalidation can help.
	s.c.stat = func(p string) (fingerprint, bool, error) {
		if e := s.c.get(p); e != nil {
			return e.fp, true, nil
		}
		return statPath(p)
	}
	ks := keystore(t, home, s)

	if err := ks.ImportKey("k", []byte("first key"), hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	wantHMACWith(t, ks, "k", []byte("first key"))
	if err := ks.ImportKey("k", []byte("other key"), hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	wantHMACWith(t, ks, "k", []byte("other key"))
	if err := ks.DeleteKey("k"); err != nil {
		t.Fatal(err)
	}
	_, err := ks.HMAC("k", []byte("m"))
	wantNotFound(t, err)
	// Create over an empty file: the empty entry must not hide the generated key.
	if err := os.WriteFile(keyPath(home, "k"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ks.LoadKey("k"); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("empty file: %v", err)
	}
	if err := ks.CreateKey("k", hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	if err := ks.LoadKey("k"); err != nil {
		t.Fatalf("created key: %v", err)
	}

	// Key pairs: a symmetric key in the file is no key pair; create replaces it.
	if _, err := ks.PublicKey("k"); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("symmetric key as a key pair: %v", err)
	}
	if err := ks.CreateKeyPair("k", []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.PublicKey("k"); err != nil {
		t.Fatalf("created key pair: %v", err)
	}
	if err := ks.DeleteKeyPair("k"); err != nil {
		t.Fatal(err)
	}
	_, err = ks.PublicKey("k")
	wantNotFound(t, err)

	// Move: the source is gone, the destination is the source's key, not its old one.
	a, aPEM := ecPEM(t)
	_, bPEM := ecPEM(t)
	os.WriteFile(keyPath(home, "a"), aPEM, 0o600)
	os.WriteFile(keyPath(home, "b"), bPEM, 0o600)
	if _, err := ks.PublicKey("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.PublicKey("b"); err != nil {
		t.Fatal(err)
	}
	if err := ks.MoveKeyPair("a", "b"); err != nil {
		t.Fatal(err)
	}
	_, err = ks.PublicKey("a")
	wantNotFound(t, err)
	wantSignedBy(t, ks, "b", a)
}

// Changes made behind keyd's back take effect on the next use.
func TestExternalChangesInvalidate(t *testing.T) {
	home := t.TempDir()
	ks := keystore(t, home, New(16))
	path := keyPath(home, "k")
	if err := ks.ImportKey("k", []byte("0123456789abcdef"), hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	wantHMACWith(t, ks, "k", []byte("0123456789abcdef"))

	t.Run("delete", func(t *testing.T) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		_, err := ks.HMAC("k", []byte("m"))
		wantNotFound(t, err)
		if err := ks.LoadKey("k"); !errors.Is(err, hsm.ErrNotFound) {
			t.Fatalf("load after delete: %v", err)
		}
	})
	t.Run("replace by rename", func(t *testing.T) {
		os.WriteFile(path, []byte("0123456789abcdef"), 0o600)
		wantHMACWith(t, ks, "k", []byte("0123456789abcdef"))
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte("fedcba9876543210"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		wantHMACWith(t, ks, "k", []byte("fedcba9876543210"))
	})
	t.Run("rewrite in place, same size", func(t *testing.T) {
		testenv.WaitNewTimestamp(t, path)
		if err := os.WriteFile(path, []byte("same size, other"), 0o600); err != nil {
			t.Fatal(err)
		}
		wantHMACWith(t, ks, "k", []byte("same size, other"))
	})
	t.Run("rewrite in place, mtime restored", func(t *testing.T) {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		testenv.WaitNewTimestamp(t, path)
		if err := os.WriteFile(path, []byte("ctime tells this"), 0o600); err != nil {
			t.Fatal(err)
		}
		// Size and mtime as before: only ctime (which no one can set) changed.
		if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
			t.Fatal(err)
		}
		wantHMACWith(t, ks, "k", []byte("ctime tells this"))
	})
	t.Run("key pair replaced", func(t *testing.T) {
		a, aPEM := ecPEM(t)
		b, bPEM := ecPEM(t)
		os.WriteFile(path, aPEM, 0o600)
		wantSignedBy(t, ks, "k", a)
		tmp := path + ".new"
		os.WriteFile(tmp, bPEM, 0o600)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		wantSignedBy(t, ks, "k", b)
		// Garbage in place of the PEM: no key pair, as upstream's load would say.
		testenv.WaitNewTimestamp(t, path)
		os.WriteFile(path, []byte("not a key"), 0o600)
		_, err := ks.PublicKey("k")
		wantNotFound(t, err)
	})
}

// A preloaded file key is cached and checked as any other.
func TestPreloadedFileKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "preloaded.key")
	os.WriteFile(path, []byte("preloaded key"), 0o600)
	ks, err := hsm.NewKeystore(hsm.Config{Preloaded: map[string]string{"p": "file://" + path}}, New(16), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantHMACWith(t, ks, "p", []byte("preloaded key"))
	os.WriteFile(path+".new", []byte("replaced key"), 0o600)
	os.Rename(path+".new", path)
	wantHMACWith(t, ks, "p", []byte("replaced key"))
}

// IDs come from callers: the cache holds at most its bound.
func TestCacheBounded(t *testing.T) {
	home := t.TempDir()
	s := New(3)
	ks := keystore(t, home, s)
	for i := range 10 {
		id := string(rune('a' + i))
		if err := ks.ImportKey(id, []byte(id), hsm.UsageSign); err != nil {
			t.Fatal(err)
		}
		wantHMACWith(t, ks, id, []byte(id))
	}
	if n := s.c.len(); n != 3 {
		t.Fatalf("%d entries, want 3", n)
	}
	// The most recently used stay.
	for _, id := range []string{"h", "i", "j"} {
		if s.c.get(keyPath(home, id)) == nil {
			t.Fatalf("%q was evicted before older keys", id)
		}
	}
}

// Concurrent uses and replacements agree with some version of the file (run with -race).
func TestConcurrentUseAndReplace(t *testing.T) {
	home := t.TempDir()
	ks := keystore(t, home, New(16))
	keys := [][]byte{[]byte("key one"), []byte("key two")}
	if err := ks.ImportKey("k", keys[0], hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	// A parsed key pair is shared by the requests using it at the same time.
	if err := ks.CreateKeyPair("ec", []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	if err := ks.CreateKeyPair("rsa", []hsm.Algorithm{hsm.RSA2048}); err != nil {
		t.Fatal(err)
	}
	msg := []byte("m")
	valid := map[string]bool{string(hsm.HMACSHA256(keys[0], msg)): true, string(hsm.HMACSHA256(keys[1], msg)): true}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 3 {
		wg.Go(func() {
			for range 200 {
				mac, err := ks.HMAC("k", msg)
				if err == nil && !valid[string(mac)] {
					err = errors.New("HMAC with neither key")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			d := sha256.Sum256(msg)
			in := make([]byte, 256)
			in[1] = 1
			for range 20 {
				_, err := ks.SignECDSA("ec", d[:])
				if err == nil {
					_, err = ks.RSAPrivate("rsa", hsm.RSANoPadding, in)
				}
				if err == nil {
					_, err = ks.RSAPrivate("rsa", hsm.RSAPKCS1, d[:])
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			if err := ks.ImportKey("k", keys[i%2], hsm.UsageSign); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantHMACWith(t, ks, "k", keys[1])
}
