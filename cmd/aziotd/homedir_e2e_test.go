package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/sdk/certs"
	"github.com/iotbroker/aziot/sdk/keys"
)

// A homedir written by upstream's services loads unchanged: file names are the ID's
// alphanumerics plus its SHA-256, symmetric keys are raw bytes of any length, key pairs
// are any PEM private key OpenSSL reads, certs are PEM text (api-keys.md §4, api-certs.md §2).
func TestUpstreamHomedirLoadsUnchanged(t *testing.T) {
	dir := testenv.NewStateDir(t)
	keysDir := filepath.Join(dir, "lib", "keyd", "keys")
	certsDir := filepath.Join(dir, "lib", "certd", "certs")
	os.MkdirAll(keysDir, 0o700)
	os.MkdirAll(certsDir, 0o700)
	write := func(d, id, ext string, b []byte) {
		if err := os.WriteFile(filepath.Join(d, hsm.FileName(id, ext)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(p256)
	write(keysDir, "device-id", ".key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	write(keysDir, "rsa-pkcs1", ".key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}))
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384der, _ := x509.MarshalPKCS8PrivateKey(p384)
	write(keysDir, "p384", ".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384der}))
	write(keysDir, "aziot_identityd_master_id", ".key", []byte("sixteen byte key"))
	write(certsDir, "device-id", ".cer", []byte("-----BEGIN CERTIFICATE-----\nnot checked\n-----END CERTIFICATE-----\n"))

	d := testenv.StartDev(t, dir)
	ctx := context.Background()
	k := keys.New(d.Socket("keyd"))
	defer k.Close()

	h, err := k.LoadKeyPair(ctx, "device-id")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey(ctx, h)
	if err != nil || !p256.PublicKey.Equal(pub) {
		t.Fatalf("SEC1 key: %v", err)
	}
	digest := sha256.Sum256([]byte("x"))
	sig, err := k.SignECDSA(ctx, h, digest[:])
	if err != nil || !ecdsa.VerifyASN1(&p256.PublicKey, digest[:], sig) {
		t.Fatalf("SEC1 sign: %v", err)
	}
	if h, err = k.LoadKeyPair(ctx, "rsa-pkcs1"); err != nil {
		t.Fatal(err)
	}
	if pub, err := k.PublicKey(ctx, h); err != nil || !rsaKey.PublicKey.Equal(pub) {
		t.Fatalf("PKCS#1 key: %v", err)
	}
	// P-384 loads and signs; only ec-curve-oid refuses it (api-keys.md §4).
	if h, err = k.LoadKeyPair(ctx, "p384"); err != nil {
		t.Fatal(err)
	}
	if sig, err = k.SignECDSA(ctx, h, digest[:]); err != nil || !ecdsa.VerifyASN1(&p384.PublicKey, digest[:], sig) {
		t.Fatalf("P-384 sign: %v", err)
	}
	if p, err := k.Parameter(ctx, h, "ec-point"); err != nil || len(p) != 68 {
		t.Fatalf("P-384 ec-point %q %v", p, err)
	}
	_, err = k.Parameter(ctx, h, "ec-curve-oid")
	testenv.WantAPIError(t, err, 400, "a parameter has an invalid value")
	// A 16-byte symmetric key signs (any non-empty length is a key).
	mh, err := k.LoadKey(ctx, "aziot_identityd_master_id")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.SignHMAC(ctx, mh, []byte("m")); err != nil {
		t.Fatal(err)
	}
	c := certs.New(d.Socket("certd"))
	defer c.Close()
	if pemText, err := c.Get(ctx, "device-id"); err != nil || pemText == "" {
		t.Fatalf("cert: %q %v", pemText, err)
	}
}

// Cert IDs that look like paths stay inside the homedir.
func TestCertIDsThatLookLikePaths(t *testing.T) {
	dir := testenv.NewStateDir(t)
	d := testenv.StartDev(t, dir)
	ctx := context.Background()
	c := certs.New(d.Socket("certd"))
	defer c.Close()
	for _, id := range []string{"../../etc/x", "a/b", "..", "%2F", "nul\x00id"} {
		if _, err := c.Import(ctx, id, "pem of "+id); err != nil {
			t.Fatalf("import %q: %v", id, err)
		}
		if got, err := c.Get(ctx, id); err != nil || got != "pem of "+id {
			t.Fatalf("get %q: %q %v", id, got, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "lib", "certd", "certs"))
	if len(entries) != 5 {
		t.Fatalf("want 5 cert files, got %d", len(entries))
	}
	r := testenv.Curl(t, -1, d.Socket("certd"), "GET", "/certificates/%FF?api-version=2020-09-01", "")
	if r.Status != 404 {
		t.Fatalf("non-UTF-8 ID: %v", r)
	}
}
