package pkcs11_test

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/hsm/pkcs11"
	"github.com/iotbroker/aziot/hsm/pkcs11/p11test"
	"github.com/iotbroker/aziot/hsm/pkcs11/p11uri"
)

// TestFailuresNameTheURI: each failure names the URI (PIN redacted) and says why.
func TestFailuresNameTheURI(t *testing.T) {
	tk, b := newToken(t)
	wrong := "wrongpin" + tk.PIN[3:]
	for _, tc := range []struct {
		name string
		b    *pkcs11.Backend
		uri  string
		want []string
	}{
		{"wrong-pin", b, (&p11uri.URI{Token: tk.Label, HasToken: true, Object: "k", HasObject: true, PIN: wrong, HasPIN: true}).Format(),
			[]string{"CKR_PIN_INCORRECT", "pin-value=REDACTED", "token=" + p11uri.Escape(tk.Label)}},
		{"missing-library", pkcs11.New("/nonexistent/libmissing.so", pkcs11.Options{}), tk.ObjectURI("k"),
			[]string{"/nonexistent/libmissing.so", "no such file", "pin-value=REDACTED"}},
		{"unknown-token", b, (&p11uri.URI{Token: "no-such-token", HasToken: true, Object: "k", HasObject: true, PIN: tk.PIN, HasPIN: true}).Format(),
			[]string{"no slot holds this token", "token=no%2Dsuch%2Dtoken"}},
		{"unknown-slot", b, (&p11uri.URI{SlotID: 4242, HasSlotID: true, Object: "k", HasObject: true}).Format(),
			[]string{"no slot holds this token", "slot-id=4242"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // the second try must fail alike (cached PIN refusal, reload)
				_, err := tc.b.HasKeyPair(hsm.Location{URI: tc.uri})
				if err == nil {
					t.Fatal("no error")
				}
				msg := err.Error()
				for _, w := range tc.want {
					if !strings.Contains(msg, w) {
						t.Errorf("error %q does not contain %q", msg, w)
					}
				}
				if strings.Contains(msg, tk.PIN) || strings.Contains(msg, wrong) {
					t.Fatalf("error shows a PIN: %s", msg)
				}
			}
		})
	}
	// The right PIN still works on the same library.
	if _, err := b.HasKeyPair(loc(tk, "k")); err != nil {
		t.Fatal(err)
	}
}

// TestTokenReinitialised: a token deleted and made again under a running backend is
// found again without restarting anything; the keys of the old token are gone.
func TestTokenReinitialised(t *testing.T) {
	tk, b := newToken(t)
	l := loc(tk, "survivor")
	if err := b.GenerateKey(l, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HMAC(l, []byte("x")); err != nil {
		t.Fatal(err)
	}

	// The token vanishes: a clear error, no crash.
	del := exec.Command("softhsm2-util", "--delete-token", "--token", tk.Label)
	del.Env = append(os.Environ(), tk.Env...)
	if out, err := del.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, err := b.HMAC(l, []byte("x")); err == nil {
		t.Fatal("HMAC on a deleted token succeeded")
	}

	// It comes back, re-initialised: the backend finds it again by itself.
	tk.InitSoftHSM(t)
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var ok bool
		if ok, err = b.HasKey(l); err == nil {
			if ok {
				t.Fatal("a key of the old token is still found")
			}
			break
		}
	}
	if err != nil {
		t.Fatalf("token not found again: %v", err)
	}
	if err := b.GenerateKey(l, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HMAC(l, []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentSigners: 64 goroutines sign for a bounded time with no error; then
// every session is back in the pool and none leaked.
func TestConcurrentSigners(t *testing.T) {
	tk, b := newToken(t)
	ec, mac := loc(tk, "busy-ec"), loc(tk, "busy-hmac")
	if err := b.GenerateKeyPair(ec, []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	if err := b.GenerateKey(mac, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("m"))
	var ops, fails atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	stop := time.Now().Add(1500 * time.Millisecond)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				var err error
				if i%2 == 0 {
					_, err = b.SignECDSA(ec, digest[:])
				} else {
					_, err = b.HMAC(mac, digest[:])
				}
				ops.Add(1)
				if err != nil {
					fails.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if fails.Load() != 0 {
		t.Fatalf("%d of %d operations failed, first: %v", fails.Load(), ops.Load(), firstErr.Load())
	}
	st, err := b.Stats(tk.URI())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d operations; sessions %+v", ops.Load(), st)
	if st.Open != st.Idle || st.Open > st.Max || st.Opened-st.Closed != int64(st.Open) || st.Open == 0 {
		t.Fatalf("session leak: %+v", st)
	}
	if st.TokenSessions >= 0 && st.TokenSessions != st.Open {
		t.Fatalf("token counts %d sessions, pool %d", st.TokenSessions, st.Open)
	}
}

// TestObjectDeletedByAnotherProcess: a cached object handle that another process made
// stale is found out: the operation answers "not found", never a wrong key.
func TestObjectDeletedByAnotherProcess(t *testing.T) {
	tk, b := newToken(t)
	l := loc(tk, "ext")
	if err := b.GenerateKeyPair(l, []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("m"))
	if _, err := b.SignECDSA(l, digest[:]); err != nil { // caches the handles
		t.Fatal(err)
	}
	for _, typ := range []string{"privkey", "pubkey"} {
		tk.Tool(t, "--delete-object", "--type", typ, "--label", "ext")
	}
	if _, err := b.SignECDSA(l, digest[:]); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("sign with a key deleted elsewhere = %v, want ErrNotFound", err)
	}
	// Made again (here by us), it is found and used.
	if err := b.GenerateKeyPair(l, []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	pub, err := b.PublicKey(l)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := b.SignECDSA(l, digest[:])
	if err != nil || !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatalf("new key: %v", err)
	}
}

// TestLibraryAppearsLater: a library path that does not exist yet fails with an error
// naming it, and works once the library is there, without a new backend.
func TestLibraryAppearsLater(t *testing.T) {
	tk, _ := newToken(t)
	lib := filepath.Join(t.TempDir(), "libpkcs11.so")
	b := pkcs11.New(lib, pkcs11.Options{RetryDelay: time.Millisecond})
	l := loc(tk, "later")
	if _, err := b.HasKey(l); err == nil || !strings.Contains(err.Error(), lib) {
		t.Fatalf("HasKey with no library = %v", err)
	}
	if err := os.Symlink(p11test.SoftHSMLib, lib); err != nil {
		t.Fatal(err)
	}
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err = b.GenerateKey(l, hsm.UsageSign); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("library not loaded once present: %v", err)
	}
	if _, err := b.HMAC(l, []byte("x")); err != nil {
		t.Fatal(err)
	}
}
