package pkcs11_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/iotbroker/aziot/hsm"
)

func TestSymmetricKeys(t *testing.T) {
	tk, b := newToken(t)
	key32 := bytes.Repeat([]byte{7}, 32)
	iv, aad, pt := []byte("0123456789ab"), []byte("aad"), []byte("hello token")

	// Generated keys: present after generation, kept on a second generation, usable.
	for _, tc := range []struct {
		name  string
		usage hsm.Usage
	}{{"hmac", hsm.UsageSign}, {"derive", hsm.UsageDerive | hsm.UsageSign}, {"aes", hsm.UsageEncrypt}} {
		t.Run("generate-"+tc.name, func(t *testing.T) {
			l := loc(tk, "gen-"+tc.name)
			if ok, err := b.HasKey(l); err != nil || ok {
				t.Fatalf("HasKey before = %v, %v", ok, err)
			}
			for range 2 {
				if err := b.GenerateKey(l, tc.usage); err != nil {
					t.Fatal(err)
				}
			}
			if ok, err := b.HasKey(l); err != nil || !ok {
				t.Fatalf("HasKey after = %v, %v", ok, err)
			}
			if tc.usage == hsm.UsageEncrypt {
				ct, err := b.AEADEncrypt(l, iv, aad, pt)
				if err != nil {
					t.Fatal(err)
				}
				back, err := b.AEADDecrypt(l, iv, aad, ct)
				if err != nil || !bytes.Equal(back, pt) {
					t.Fatalf("decrypt = %q, %v", back, err)
				}
				if _, err := b.HMAC(l, pt); !errors.Is(err, hsm.ErrInvalid) {
					t.Fatalf("HMAC with an AES key = %v, want ErrInvalid", err)
				}
				return
			}
			m1, err := b.HMAC(l, pt)
			if err != nil {
				t.Fatal(err)
			}
			m2, _ := b.HMAC(l, pt)
			if len(m1) != 32 || !bytes.Equal(m1, m2) {
				t.Fatalf("HMAC = %x, %x", m1, m2)
			}
		})
	}

	// Imported keys compute what the software does with the same bytes.
	t.Run("import-hmac", func(t *testing.T) {
		l := loc(tk, "imp-hmac")
		if err := b.ImportKey(l, key32, hsm.UsageSign); err != nil {
			t.Fatal(err)
		}
		got, err := b.HMAC(l, pt)
		if err != nil || !bytes.Equal(got, hsm.HMACSHA256(key32, pt)) {
			t.Fatalf("HMAC = %x, %v", got, err)
		}
		// Import overwrites.
		other := bytes.Repeat([]byte{9}, 40)
		if err := b.ImportKey(l, other, hsm.UsageSign); err != nil {
			t.Fatal(err)
		}
		if got, _ := b.HMAC(l, pt); !bytes.Equal(got, hsm.HMACSHA256(other, pt)) {
			t.Fatal("import did not overwrite")
		}
	})
	t.Run("import-aes", func(t *testing.T) {
		l := loc(tk, "imp-aes")
		if err := b.ImportKey(l, key32, hsm.UsageEncrypt); err != nil {
			t.Fatal(err)
		}
		ct, err := b.AEADEncrypt(l, iv, aad, pt)
		if err != nil {
			t.Fatal(err)
		}
		soft, err := hsm.SealV2(key32, iv, aad, pt)
		if err != nil || !bytes.Equal(ct, soft) {
			t.Fatalf("token ciphertext %x, software %x (%v)", ct, soft, err)
		}
		bad := append([]byte{}, ct...)
		bad[len(bad)-1] ^= 1
		if _, err := b.AEADDecrypt(l, iv, aad, bad); !errors.Is(err, hsm.ErrAuthentication) {
			t.Fatalf("tampered decrypt = %v", err)
		}
		v1 := append([]byte{1}, ct[1:]...)
		if _, err := b.AEADDecrypt(l, iv, aad, v1); !errors.Is(err, hsm.ErrInvalid) {
			t.Fatalf("version 1 decrypt = %v, want ErrInvalid", err)
		}
		for _, badIV := range [][]byte{nil, make([]byte, 129)} {
			if _, err := b.AEADEncrypt(l, badIV, aad, pt); !errors.Is(err, hsm.ErrInvalid) {
				t.Fatalf("IV of %d bytes = %v", len(badIV), err)
			}
		}
	})

	// What the token cannot hold falls back (ErrUnsupported); what no store may do is
	// invalid.
	for _, tc := range []struct {
		name  string
		key   []byte
		usage hsm.Usage
		want  error
	}{
		{"short-hmac", []byte("short"), hsm.UsageSign, hsm.ErrUnsupported},
		{"odd-aes", make([]byte, 20), hsm.UsageEncrypt, hsm.ErrUnsupported},
		{"encrypt-and-sign", key32, hsm.UsageEncrypt | hsm.UsageSign, hsm.ErrInvalid},
		{"empty", nil, hsm.UsageSign, hsm.ErrInvalid},
	} {
		t.Run("refuse-"+tc.name, func(t *testing.T) {
			l := loc(tk, "refused-"+tc.name)
			if err := b.ImportKey(l, tc.key, tc.usage); !errors.Is(err, tc.want) {
				t.Fatalf("ImportKey = %v, want %v", err, tc.want)
			}
			if ok, _ := b.HasKey(l); ok {
				t.Fatal("a refused key is in the token")
			}
		})
	}

	t.Run("delete", func(t *testing.T) {
		l := loc(tk, "gen-hmac")
		for range 2 { // deleting a missing key is fine
			if err := b.DeleteKey(l); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.HMAC(l, pt); !errors.Is(err, hsm.ErrNotFound) {
			t.Fatalf("HMAC after delete = %v", err)
		}
		noLabel := hsm.Location{URI: tk.URI()}
		if err := b.DeleteKey(noLabel); !errors.Is(err, hsm.ErrInvalid) {
			t.Fatalf("delete without label = %v", err)
		}
	})
	_ = rand.Reader
}
