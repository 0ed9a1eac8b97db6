package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotbroker/aziot/hsm/pkcs11/p11test"
	"github.com/iotbroker/aziot/hsm/pkcs11/p11uri"
	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/sdk/keys"
)

// TestBrokenTokenKeepsFileKeysWorking: a wrong PIN, a missing library and a token that
// cannot be opened each fail the requests for that key with the URI in keyd's log
// (never the PIN), while file keys keep working.
func TestBrokenTokenKeepsFileKeysWorking(t *testing.T) {
	t.Parallel()
	tk := p11test.SoftHSM(t)
	wrongPIN := "wrong" + tk.PIN
	uriWith := func(token, pin string) string {
		return (&p11uri.URI{Token: token, HasToken: true, Object: "device-id", HasObject: true, PIN: pin, HasPIN: true}).Format()
	}
	for _, tc := range []struct {
		name, lib, uri string
		want           []string
	}{
		{"wrong PIN", tk.Lib, uriWith(tk.Label, wrongPIN), []string{"CKR_PIN_INCORRECT"}},
		{"missing library", "/nonexistent/libpkcs11.so", uriWith(tk.Label, tk.PIN), []string{"/nonexistent/libpkcs11.so"}},
		{"token cannot be opened", tk.Lib, uriWith("no-such-token", tk.PIN), []string{"no slot holds this token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pemPath := writeECKey(t)
			b := testenv.KeydBackend{
				Name: "broken",
				// No base slot: keys by ID, and the handle validation key, are files; one
				// preloaded key is the broken token's, one a file.
				Config: func(testing.TB) string {
					return fmt.Sprintf("[aziot_keys]\npkcs11_lib_path = %q\n\n[preloaded_keys]\ndevice-id = %q\nfile-key = %q\n",
						tc.lib, tc.uri, "file://"+pemPath)
				},
				Env: tk.Env,
			}
			env := testenv.StartKeyd(t, b, nil)
			ctx := context.Background()
			_, err := env.Keys.LoadKeyPair(ctx, "device-id")
			testenv.WantAPIError(t, err, 500, "internal error")

			// File keys keep working: the preloaded one and one created by ID.
			h, err := env.Keys.LoadKeyPair(ctx, "file-key")
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256([]byte("x"))
			if _, err := env.Keys.SignECDSA(ctx, h, digest[:]); err != nil {
				t.Fatal(err)
			}
			hk, err := env.Keys.CreateKey(ctx, "by-id", "sign")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := env.Keys.SignHMAC(ctx, hk, []byte("x")); err != nil {
				t.Fatal(err)
			}

			log := env.Daemon.Stderr()
			u, _ := p11uri.Parse(tc.uri)
			redacted := u.String() // the URI with pin-value=REDACTED
			for _, w := range append(tc.want, redacted) {
				if !strings.Contains(log, w) {
					t.Errorf("keyd log does not name %q:\n%s", w, log)
				}
			}
			for _, pin := range []string{tk.PIN, wrongPIN, tk.SOPIN} {
				if strings.Contains(log, pin) {
					t.Fatalf("keyd log shows a PIN:\n%s", log)
				}
			}
		})
	}
}

func writeECKey(t testing.TB) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	p := filepath.Join(t.TempDir(), "file-key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTokenReinitialisedUnderKeyd: the token is deleted and made again while keyd runs;
// keyd (the same process: nothing restarts it) finds it again, and new keys work.
func TestTokenReinitialisedUnderKeyd(t *testing.T) {
	t.Parallel()
	tk := p11test.SoftHSM(t)
	env := testenv.StartKeyd(t, backend("softhsm", tk, ""), nil)
	ctx := context.Background()
	digest := sha256.Sum256([]byte("x"))
	h, err := env.Keys.CreateKeyPair(ctx, "device-id", "ec-p256")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Keys.SignECDSA(ctx, h, digest[:]); err != nil {
		t.Fatal(err)
	}

	tk.InitSoftHSM(t) // delete and re-create, same label and PIN

	// Bounded: the library reload is rate-limited to one a second.
	var lastErr error
	deadline := time.Now().Add(15 * time.Second)
	for ; time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var h2 string
		if h2, lastErr = env.Keys.CreateKeyPair(ctx, "device-id", "ec-p256"); lastErr != nil {
			continue
		}
		if _, lastErr = env.Keys.SignECDSA(ctx, h2, digest[:]); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("keyd did not recover from the re-initialised token: %v", lastErr)
	}
	// The key pair is a new one, in the new token.
	checkNotExtractable(t, tk, []string{"device-id", "handle-validation-key"}, nil)
	if log := env.Daemon.Stderr(); strings.Contains(log, tk.PIN) || strings.Contains(log, tk.SOPIN) {
		t.Fatalf("keyd log shows a PIN:\n%s", log)
	}
}

// TestParallelSignersThroughKeyd: 64 clients sign at once through the socket for a
// bounded time, with no error. (The pool's session accounting is checked in-process by
// hsm/pkcs11's TestConcurrentSigners.)
func TestParallelSignersThroughKeyd(t *testing.T) {
	t.Parallel()
	tk := p11test.SoftHSM(t)
	env := testenv.StartKeyd(t, backend("softhsm", tk, ""), map[string]string{"60-max.toml": "max_requests = 200\n"})
	ctx := context.Background()
	h, err := env.Keys.CreateKeyPair(ctx, "busy", "ec-p256")
	if err != nil {
		t.Fatal(err)
	}
	c := keys.NewWithConns(env.Daemon.Socket("keyd"), 64)
	t.Cleanup(c.Close)
	pub, err := c.PublicKey(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	var ops, fails atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	stop := time.Now().Add(1500 * time.Millisecond)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				sig, err := c.SignECDSA(ctx, h, digest[:])
				if err == nil && !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
					err = fmt.Errorf("signature does not verify")
				}
				ops.Add(1)
				if err != nil {
					fails.Add(1)
					first.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d signatures through keyd", ops.Load())
	if fails.Load() != 0 {
		t.Fatalf("%d of %d failed, first: %v", fails.Load(), ops.Load(), first.Load())
	}
}
