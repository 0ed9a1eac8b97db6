package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/sdk/keys"
)

const invalidValue = "a parameter has an invalid value"

// keyd keeps the keys it read in memory (docs/RATIONALE.md); a key file deleted or
// replaced on disk must still take effect on the next request, as upstream, which reads
// the file every time.
func TestKeydKeyFilesChangedOnDisk(t *testing.T) {
	dir := testenv.NewStateDir(t)
	d := testenv.StartDev(t, dir)
	keysDir := filepath.Join(dir, "lib", "keyd", "keys")
	path := func(id string) string { return filepath.Join(keysDir, hsm.FileName(id, ".key")) }
	ctx := context.Background()
	k := keys.New(d.Socket("keyd"))
	defer k.Close()

	// replace puts b at p as an atomic write does (new inode).
	replace := func(p string, b []byte) {
		t.Helper()
		if err := os.WriteFile(p+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".new", p); err != nil {
			t.Fatal(err)
		}
	}
	msg := []byte("message")
	wantHMAC := func(h string, key []byte) {
		t.Helper()
		mac, err := k.SignHMAC(ctx, h, msg)
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		m := hmac.New(sha256.New, key)
		m.Write(msg)
		if !bytes.Equal(mac, m.Sum(nil)) {
			t.Fatal("HMAC is not keyed by the key file's content")
		}
	}

	t.Run("symmetric key", func(t *testing.T) {
		h, err := k.CreateKey(ctx, "k1", "sign")
		if err != nil {
			t.Fatal(err)
		}
		key1, err := os.ReadFile(path("k1"))
		if err != nil {
			t.Fatal(err)
		}
		wantHMAC(h, key1)
		wantHMAC(h, key1) // now from memory

		if err := os.Remove(path("k1")); err != nil {
			t.Fatal(err)
		}
		_, err = k.SignHMAC(ctx, h, msg)
		testenv.WantAPIError(t, err, 400, invalidValue)

		// Another key's bytes in its place: the handle now signs with them.
		if _, err := k.CreateKey(ctx, "k2", "sign"); err != nil {
			t.Fatal(err)
		}
		key2, err := os.ReadFile(path("k2"))
		if err != nil {
			t.Fatal(err)
		}
		replace(path("k1"), key2)
		wantHMAC(h, key2)
		// A rewrite in place, same size (32 bytes), other content.
		key3 := bytes.Repeat([]byte{0x5a}, len(key2))
		testenv.WaitNewTimestamp(t, path("k1"))
		if err := os.WriteFile(path("k1"), key3, 0o600); err != nil {
			t.Fatal(err)
		}
		wantHMAC(h, key3)
	})

	t.Run("key pair", func(t *testing.T) {
		h, err := k.CreateKeyPair(ctx, "ec1", "ec-p256")
		if err != nil {
			t.Fatal(err)
		}
		pub, err := k.PublicKey(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		wantSigned := func(pub *ecdsa.PublicKey) {
			t.Helper()
			digest := sha256.Sum256(msg)
			sig, err := k.SignECDSA(ctx, h, digest[:])
			if err != nil {
				t.Fatalf("sign: %v", err)
			}
			if !ecdsa.VerifyASN1(pub, digest[:], sig) {
				t.Fatal("signature does not verify with the key in the file")
			}
		}
		wantSigned(pub.(*ecdsa.PublicKey))
		wantSigned(pub.(*ecdsa.PublicKey))

		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(other)
		if err != nil {
			t.Fatal(err)
		}
		replace(path("ec1"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		wantSigned(&other.PublicKey)
		if got, err := k.PublicKey(ctx, h); err != nil || !other.PublicKey.Equal(got) {
			t.Fatalf("public key after the replacement: %v", err)
		}

		if err := os.Remove(path("ec1")); err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256(msg)
		_, err = k.SignECDSA(ctx, h, digest[:])
		testenv.WantAPIError(t, err, 400, invalidValue)
	})

	t.Run("handle validation key", func(t *testing.T) {
		h, err := k.CreateKey(ctx, "k4", "sign")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.SignHMAC(ctx, h, msg); err != nil {
			t.Fatal(err)
		}
		// Without the key that signed them, handles are void; a new key is made for new
		// ones (upstream creates it on first use).
		if err := os.Remove(path("handle-validation-key")); err != nil {
			t.Fatal(err)
		}
		_, err = k.SignHMAC(ctx, h, msg)
		testenv.WantAPIError(t, err, 400, "parameter \"handle\" has an invalid value\ncaused by: invalid handle")
		if h, err = k.LoadKey(ctx, "k4"); err != nil {
			t.Fatal(err)
		}
		if _, err := k.SignHMAC(ctx, h, msg); err != nil {
			t.Fatalf("handle under the new validation key: %v", err)
		}
	})
}
