package testenv

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotbroker/aziot/sdk/keys"
)

// KeydBackend is a key store the keyd suite runs against.
type KeydBackend struct {
	Name string
	// Config returns a TOML fragment for DIR/etc/keyd/config.d (e.g. PKCS#11 settings).
	Config func(t testing.TB) string
	// Env is added to the daemon's environment.
	Env []string
	// Files is true when keys live in homedir files (file-layout checks run).
	Files bool
	// SymmetricInFiles: the token holds no symmetric key keyd can use (tpm2-pkcs11 has
	// no generic-secret keys nor AES-GCM), so they fall back to files (api-keys.md §4).
	SymmetricInFiles bool
	// Unsupported lists key-pair algorithms the token cannot generate: creating one
	// must fail with 500 (upstream does not fall back to files for key pairs).
	Unsupported map[string]bool
}

// FileBackend is keyd's default store.
var FileBackend = KeydBackend{Name: "file", Files: true}

// KeydEnv is a running daemon with keyd clients.
type KeydEnv struct {
	Daemon *Daemon
	// Keys talks to keyd through the OpenAPI-validating proxy.
	Keys  *keys.Client
	Proxy *ValidatingProxy
}

// StartKeyd starts aziotd dev for backend with extra config.d fragments (name → TOML).
func StartKeyd(t testing.TB, b KeydBackend, fragments map[string]string) *KeydEnv {
	t.Helper()
	dir := NewStateDir(t)
	if b.Config != nil {
		WriteConfig(t, dir, "keyd", "50-backend.toml", b.Config(t))
	}
	for name, content := range fragments {
		WriteConfig(t, dir, "keyd", name, content)
	}
	d := StartDev(t, dir, b.Env...)
	specs := map[string]*Spec{
		"2020-09-01": LoadSpec(t, "keyd/2020-09-01.yaml"),
		"2021-05-01": LoadSpec(t, "keyd/2021-05-01.yaml"),
	}
	p := NewValidatingProxy(t, d.Socket("keyd"), specs)
	c := keys.New(p.Socket)
	t.Cleanup(c.Close)
	return &KeydEnv{Daemon: d, Keys: c, Proxy: p}
}

// must returns a function that fails the test on error, so that calls read
// must[string](t)(k.CreateKey(...)).
func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// WantAPIError checks that err is an API error with status and message.
func WantAPIError(t testing.TB, err error, status int, message string) {
	t.Helper()
	var e *keys.APIError
	if !errors.As(err, &e) {
		t.Fatalf("want %d %q, got %v", status, message, err)
	}
	if e.Status != status || e.Message != message {
		t.Fatalf("want %d %q, got %d %q", status, message, e.Status, e.Message)
	}
}

// Openssl runs the openssl command and fails the test on error.
func Openssl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// PublicKeyPEM writes pub as a PEM file for openssl.
func PublicKeyPEM(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der := must[[]byte](t)(x509.MarshalPKIXPublicKey(pub))
	return writeTemp(t, "pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

const (
	invalidHandleMsg = "parameter \"handle\" has an invalid value\ncaused by: invalid handle"
	invalidValueMsg  = "a parameter has an invalid value"
	mechanismMsg     = "parameter \"mechanism\" has an invalid value\ncaused by: mechanism cannot be used with this key type"
)

// RunKeydSuite runs every keyd behaviour against one backend, through the real socket.
func RunKeydSuite(t *testing.T, b KeydBackend) {
	env := StartKeyd(t, b, nil)
	ctx := context.Background()
	k := env.Keys

	t.Run("symmetric keys", func(t *testing.T) {
		h1 := must[string](t)(k.CreateKey(ctx, "sym-gen", "derive,sign"))
		h2 := must[string](t)(k.CreateKey(ctx, "sym-gen", "derive,sign"))
		if h1 == h2 {
			t.Fatal("two handles for the same key must differ (fresh nonce)")
		}
		s1 := must[[]byte](t)(k.SignHMAC(ctx, h1, []byte("m")))
		s2 := must[[]byte](t)(k.SignHMAC(ctx, h2, []byte("m")))
		if !bytes.Equal(s1, s2) || len(s1) != 32 {
			t.Fatal("create must keep an existing key")
		}
		secret := bytes.Repeat([]byte{7}, 32)
		h := must[string](t)(k.ImportKey(ctx, "sym-gen", secret, "sign"))
		got := must[[]byte](t)(k.SignHMAC(ctx, h, []byte("message")))
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte("message"))
		if !hmac.Equal(got, mac.Sum(nil)) {
			t.Fatal("import must overwrite and HMAC must match")
		}
		// An independent HMAC implementation agrees.
		msgFile := writeTemp(t, "msg", []byte("message"))
		out := Openssl(t, "dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:"+fmt.Sprintf("%x", secret), "-hex", msgFile)
		if !strings.Contains(out, fmt.Sprintf("%x", got)) {
			t.Fatalf("openssl HMAC %s != %x", out, got)
		}
		loaded := must[string](t)(k.LoadKey(ctx, "sym-gen"))
		if s := must[[]byte](t)(k.SignHMAC(ctx, loaded, []byte("message"))); !bytes.Equal(s, got) {
			t.Fatal("loaded handle signs differently")
		}
		_, err := k.LoadKey(ctx, "sym-absent")
		WantAPIError(t, err, 400, invalidValueMsg)
	})

	t.Run("EC P-256 key pair", func(t *testing.T) {
		h := must[string](t)(k.CreateKeyPair(ctx, "ec-1", "ec-p256:rsa-2048:*"))
		if v := must[string](t)(k.Parameter(ctx, h, "algorithm")); v != "ECDSA" {
			t.Fatalf("algorithm %q", v)
		}
		oid := must[string](t)(k.Parameter(ctx, h, "ec-curve-oid"))
		if oid != base64.StdEncoding.EncodeToString([]byte{0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07}) {
			t.Fatalf("ec-curve-oid %q", oid)
		}
		point, _ := base64.StdEncoding.DecodeString(must[string](t)(k.Parameter(ctx, h, "ec-point")))
		if len(point) != 33 || (point[0] != 2 && point[0] != 3) {
			t.Fatalf("ec-point is not compressed: %x", point)
		}
		_, err := k.Parameter(ctx, h, "rsa-modulus")
		WantAPIError(t, err, 400, invalidValueMsg)
		_, err = k.Parameter(ctx, h, "bogus")
		WantAPIError(t, err, 400, invalidValueMsg)
		signer := must[*keys.Signer](t)(k.Signer(ctx, h))
		data := []byte("sign me")
		digest := sha256.Sum256(data)
		sig := must[[]byte](t)(signer.Sign(rand.Reader, digest[:], crypto.SHA256))
		if !ecdsa.VerifyASN1(signer.Public().(*ecdsa.PublicKey), digest[:], sig) {
			t.Fatal("ECDSA signature does not verify")
		}
		pub := PublicKeyPEM(t, signer.Public())
		Openssl(t, "dgst", "-sha256", "-verify", pub, "-signature", writeTemp(t, "sig", sig), writeTemp(t, "data", data))
		// RSA mechanisms on an EC key are a parameter error.
		_, err = k.RSAPrivate(ctx, h, keys.AlgRSAPKCS1, digest[:])
		WantAPIError(t, err, 400, invalidValueMsg)
		// HMAC with a key pair is the wrong mechanism.
		_, err = k.SignHMAC(ctx, h, data)
		WantAPIError(t, err, 400, mechanismMsg)
		// Create keeps an existing key pair.
		h2 := must[string](t)(k.CreateKeyPair(ctx, "ec-1", "rsa-2048"))
		if v := must[string](t)(k.Parameter(ctx, h2, "algorithm")); v != "ECDSA" {
			t.Fatal("create replaced an existing key pair")
		}
	})

	for _, alg := range []string{"rsa-2048", "rsa-4096"} {
		t.Run(alg+" key pair", func(t *testing.T) {
			if b.Unsupported[alg] {
				_, err := k.CreateKeyPair(ctx, "rsa-"+alg, alg)
				WantAPIError(t, err, 500, "internal error")
				return
			}
			h := must[string](t)(k.CreateKeyPair(ctx, "rsa-"+alg, alg))
			signer := must[*keys.Signer](t)(k.Signer(ctx, h))
			pub := signer.Public().(*rsa.PublicKey)
			if want := map[string]int{"rsa-2048": 2048, "rsa-4096": 4096}[alg]; pub.N.BitLen() != want || pub.E != 65537 {
				t.Fatalf("modulus %d bits, e %d", pub.N.BitLen(), pub.E)
			}
			data := []byte("rsa data")
			digest := sha256.Sum256(data)
			pubFile := PublicKeyPEM(t, pub)
			dataFile := writeTemp(t, "data", data)

			pkcs1 := must[[]byte](t)(signer.Sign(rand.Reader, digest[:], crypto.SHA256))
			Openssl(t, "dgst", "-sha256", "-verify", pubFile, "-signature", writeTemp(t, "s1", pkcs1), dataFile)

			pss := must[[]byte](t)(signer.Sign(rand.Reader, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}))
			Openssl(t, "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32", "-verify", pubFile, "-signature", writeTemp(t, "s2", pss), dataFile)

			// RSA-PKCS1 on /encrypt is the sign primitive over a caller-built DigestInfo.
			info := append([]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, digest[:]...)
			raw := must[[]byte](t)(k.RSAPrivate(ctx, h, keys.AlgRSAPKCS1, info))
			if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], raw); err != nil {
				t.Fatalf("RSA-PKCS1 output: %v", err)
			}
			// Raw input of the wrong size is refused as a parameter error.
			_, err := k.RSAPrivate(ctx, h, keys.AlgRSANoPadding, []byte{1, 2, 3})
			WantAPIError(t, err, 400, invalidValueMsg)
			_, err = k.SignECDSA(ctx, h, digest[:])
			WantAPIError(t, err, 400, invalidValueMsg)
			// Decrypt with RSA is not a keyd mechanism.
			alg := keys.AlgRSAPKCS1
			err = env.rawPost(t, "/decrypt", keys.DecryptRequest{KeyHandle: &h, Algorithm: &alg, Ciphertext: []byte{1}})
			WantAPIError(t, err, 400, mechanismMsg)
		})
	}

	t.Run("AEAD", func(t *testing.T) {
		secret := bytes.Repeat([]byte{9}, 32)
		h := must[string](t)(k.ImportKey(ctx, "aead-1", secret, "encrypt"))
		iv, aad, pt := []byte("0123456789ab"), []byte("aad"), []byte("plaintext")
		ct := must[[]byte](t)(k.EncryptAEAD(ctx, h, iv, aad, pt))
		if ct[0] != 2 || len(ct) != 1+len(pt)+16 {
			t.Fatalf("ciphertext layout: %x", ct)
		}
		if got := must[[]byte](t)(k.DecryptAEAD(ctx, h, iv, aad, ct)); !bytes.Equal(got, pt) {
			t.Fatalf("round trip: %q", got)
		}
		// Version 1 (tag first), as IoT Edge 1.1 wrote it, still decrypts on files.
		block, _ := aes.NewCipher(secret)
		gcm, _ := cipher.NewGCM(block)
		sealed := gcm.Seal(nil, iv, pt, aad)
		v1 := append([]byte{1}, append(sealed[len(sealed)-16:], sealed[:len(sealed)-16]...)...)
		got, err := k.DecryptAEAD(ctx, h, iv, aad, v1)
		if b.Files || b.SymmetricInFiles {
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("version 1: %q %v", got, err)
			}
		} else {
			WantAPIError(t, err, 400, invalidValueMsg)
		}
		tampered := append([]byte{}, ct...)
		tampered[len(tampered)-1] ^= 1
		_, err = k.DecryptAEAD(ctx, h, iv, aad, tampered)
		WantAPIError(t, err, 400, invalidValueMsg)
		_, err = k.DecryptAEAD(ctx, h, iv, aad, []byte{3, 1, 2})
		WantAPIError(t, err, 400, invalidValueMsg)
		_, err = k.DecryptAEAD(ctx, h, iv, aad, append([]byte{7}, ct[1:]...))
		WantAPIError(t, err, 400, invalidValueMsg)
	})

	t.Run("derived keys", func(t *testing.T) {
		secret := bytes.Repeat([]byte{5}, 32)
		base := must[string](t)(k.ImportKey(ctx, "master", secret, "derive,sign"))
		d := must[string](t)(k.DeriveKey(ctx, base, []byte("module-1:gen:primary")))
		want := hmac.New(sha256.New, secret)
		want.Write([]byte("module-1:gen:primary"))
		derived := want.Sum(nil)
		if got := must[[]byte](t)(k.ExportDerivedKey(ctx, d)); !bytes.Equal(got, derived) {
			t.Fatalf("export %x want %x", got, derived)
		}
		sig := must[[]byte](t)(k.SignHMAC(ctx, d, []byte("msg")))
		m := hmac.New(sha256.New, derived)
		m.Write([]byte("msg"))
		if !hmac.Equal(sig, m.Sum(nil)) {
			t.Fatal("derived signature")
		}
		ct := must[[]byte](t)(k.EncryptAEAD(ctx, d, []byte("iv-of-12-byt"), nil, []byte("x")))
		if pt := must[[]byte](t)(k.DecryptAEAD(ctx, d, []byte("iv-of-12-byt"), nil, ct)); string(pt) != "x" {
			t.Fatal("derived AEAD round trip")
		}
		_, err := k.DeriveKey(ctx, d, []byte("again"))
		WantAPIError(t, err, 400, "parameter \"handle\" has an invalid value\ncaused by: nested derived keys are not supported, import the outer derived key first")
		_, err = k.ExportDerivedKey(ctx, base)
		WantAPIError(t, err, 400, "parameter \"handle\" has an invalid value\ncaused by: handle is not for a derived key")
		kp := must[string](t)(k.CreateKeyPair(ctx, "derive-from-kp", "ec-p256"))
		_, err = k.DeriveKey(ctx, kp, []byte("x"))
		WantAPIError(t, err, 400, "parameter \"handle\" has an invalid value\ncaused by: keys cannot be derived from a key pair")
		// A forged derived handle that wraps a derived handle is refused as nested.
		_, err = k.SignHMAC(ctx, forgeNested(d), []byte("x"))
		WantAPIError(t, err, 400, invalidHandleMsg)
	})

	t.Run("forged and malformed handles", func(t *testing.T) {
		good := must[string](t)(k.CreateKey(ctx, "handle-target", "sign"))
		sr, sig, _ := strings.Cut(strings.TrimPrefix(good, "sr="), "&sig=")
		srBytes, _ := base64.StdEncoding.DecodeString(sr)
		otherID := strings.Replace(string(srBytes), "handle-target", "other-key", 1)
		cases := map[string]string{
			"empty":                 "",
			"garbage":               "hello",
			"no sig":                "sr=" + sr,
			"no sr":                 "sig=" + sig,
			"truncated sig":         "sr=" + sr + "&sig=" + sig[:10],
			"bad base64":            "sr=" + sr + "&sig=!!!",
			"flipped sig":           "sr=" + sr + "&sig=" + flip(sig),
			"other id, same sig":    "sr=" + base64.StdEncoding.EncodeToString([]byte(otherID)) + "&sig=" + sig,
			"re-encoded sr":         "sr=" + base64.StdEncoding.EncodeToString(append(srBytes, ' ')) + "&sig=" + sig,
			"malformed earlier dup": "sr=%%%&sr=" + sr + "&sig=" + sig,
			"NUL":                   "sr=" + sr + "\x00&sig=" + sig,
		}
		for name, h := range cases {
			_, err := k.SignHMAC(ctx, h, []byte("x"))
			var e *keys.APIError
			if !errors.As(err, &e) || e.Status != 400 || e.Message != invalidHandleMsg {
				t.Errorf("%s: got %v", name, err)
			}
		}
		// Extra parameters are ignored and a later duplicate wins, as upstream.
		if _, err := k.SignHMAC(ctx, "x=1&sr="+sr+"&sig="+flip(sig)+"&sig="+sig, []byte("x")); err != nil {
			t.Errorf("later duplicate: %v", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		hk := must[string](t)(k.CreateKey(ctx, "del-key", "sign"))
		hp := must[string](t)(k.CreateKeyPair(ctx, "del-kp", "ec-p256"))
		WantAPIError(t, k.DeleteKey(ctx, hp), 400, "parameter \"handle\" has an invalid value\ncaused by: handle is not for a key")
		WantAPIError(t, k.DeleteKeyPair(ctx, hk), 400, "parameter \"handle\" has an invalid value\ncaused by: handle is not for a key pair")
		if err := k.DeleteKey(ctx, hk); err != nil {
			t.Fatal(err)
		}
		if err := k.DeleteKeyPair(ctx, hp); err != nil {
			t.Fatal(err)
		}
		_, err := k.LoadKey(ctx, "del-key")
		WantAPIError(t, err, 400, invalidValueMsg)
		_, err = k.LoadKeyPair(ctx, "del-kp")
		WantAPIError(t, err, 400, invalidValueMsg)
		// Deleting again is fine: a missing key is not an error.
		if err := k.DeleteKey(ctx, hk); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("move key pair", func(t *testing.T) {
		h := must[string](t)(k.CreateKeyPair(ctx, "mv-src", "ec-p256"))
		pub := must[crypto.PublicKey](t)(k.PublicKey(ctx, h))
		WantAPIError(t, k.MoveKeyPair(ctx, "mv-src", "mv-src"), 400, "source and destination for move are identical")
		from := "mv-src"
		WantAPIError(t, env.rawPost(t, "/key/mv-dst", keys.MoveKeyPairRequest{From: &from}), 400, `invalid type "key"`)
		if err := k.MoveKeyPair(ctx, "mv-src", "mv-dst"); err != nil {
			t.Fatal(err)
		}
		moved := must[string](t)(k.LoadKeyPair(ctx, "mv-dst"))
		if got := must[crypto.PublicKey](t)(k.PublicKey(ctx, moved)); !got.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Fatal("moved key differs")
		}
		_, err := k.LoadKeyPair(ctx, "mv-src")
		WantAPIError(t, err, 400, invalidValueMsg)
	})

	t.Run("handle validation key is not reachable by ID", func(t *testing.T) {
		_, err := k.LoadKey(ctx, "handle-validation-key")
		WantAPIError(t, err, 401, "user 0 is not authorized to access the key handle-validation-key")
		_, err = k.ImportKey(ctx, "handle-validation-key", []byte("x"), "sign")
		WantAPIError(t, err, 401, "user 0 is not authorized to access the key handle-validation-key")
	})

	t.Run("IDs that look like paths or carry NUL", func(t *testing.T) {
		for _, id := range []string{"../../etc/passwd", "a/b", "..", "ключ"} {
			h := must[string](t)(k.CreateKey(ctx, id, "sign"))
			must[[]byte](t)(k.SignHMAC(ctx, h, []byte("x")))
			must[string](t)(k.LoadKey(ctx, id))
		}
		_, err := k.CreateKey(ctx, "nul\x00id", "sign")
		WantAPIError(t, err, 400, "parameter \"id\" has an invalid value")
		if b.Files {
			entries, _ := os.ReadDir(filepath.Join(env.Daemon.Dir, "lib", "keyd", "keys"))
			for _, e := range entries {
				if strings.Contains(e.Name(), "/") || strings.HasPrefix(e.Name(), ".") {
					t.Errorf("unexpected key file %q", e.Name())
				}
			}
			if _, err := os.Stat(filepath.Join(env.Daemon.Dir, "lib", "keyd", "keys", "etcpasswd-"+sha256hex("../../etc/passwd")+".key")); err != nil {
				t.Errorf("key file not laid out as upstream: %v", err)
			}
		}
	})

	t.Run("keyd API version 2020-09-01 answers alike", func(t *testing.T) {
		r := Curl(t, -1, env.Daemon.Socket("keyd"), "POST", "/key?api-version=2020-09-01", `{"keyId":"v1-key","usage":"sign"}`)
		if r.Status != 200 || !strings.Contains(string(r.Body), `"keyHandle":"sr=`) {
			t.Fatalf("%v", r)
		}
		var out keys.KeyHandleResponse
		json.Unmarshal(r.Body, &out)
		r = Curl(t, -1, env.Daemon.Socket("keyd"), "DELETE", "/key?api-version=2020-09-01", `{"keyHandle":"`+out.KeyHandle+`"}`)
		if r.Status != 204 || len(r.Body) != 0 {
			t.Fatalf("DELETE /key with 2020-09-01: %v", r)
		}
	})

	if checked := env.Proxy.Checked(); len(checked) < 8 {
		t.Errorf("OpenAPI validation covered only %v", checked)
	}
}

func (e *KeydEnv) rawPost(t testing.TB, path string, body any) error {
	t.Helper()
	b, _ := json.Marshal(body)
	r := Curl(t, -1, e.Daemon.Socket("keyd"), "POST", path+"?api-version=2021-05-01", string(b))
	if r.Status >= 300 {
		var m struct{ Message string }
		json.Unmarshal(r.Body, &m)
		return &keys.APIError{Status: r.Status, Message: m.Message}
	}
	return nil
}

func flip(b64 string) string {
	b, _ := base64.StdEncoding.DecodeString(b64)
	if len(b) > 0 {
		b[0] ^= 1
	}
	return base64.StdEncoding.EncodeToString(b)
}

func forgeNested(derived string) string {
	sr := fmt.Sprintf(`{"key_id":{"Derived":[%q,[1]]},"nonce":"x"}`, derived)
	return "sr=" + base64.StdEncoding.EncodeToString([]byte(sr)) + "&sig=" + base64.StdEncoding.EncodeToString(make([]byte, 32))
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x", sum)
}
