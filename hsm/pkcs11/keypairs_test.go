package pkcs11_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/iotbroker/aziot/hsm"
)

// sha256DigestInfo is the DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2).
var sha256DigestInfo = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

func TestKeyPairs(t *testing.T) {
	tk, b := newToken(t)
	digest := sha256.Sum256([]byte("message"))
	for _, tc := range []struct {
		alg  hsm.Algorithm
		bits int
	}{{hsm.ECP256, 256}, {hsm.RSA2048, 2048}, {hsm.RSA4096, 4096}} {
		t.Run(string(tc.alg), func(t *testing.T) {
			l := loc(tk, "pair-"+string(tc.alg))
			if err := b.GenerateKeyPair(l, []hsm.Algorithm{tc.alg}); err != nil {
				t.Fatal(err)
			}
			pub1, err := b.PublicKey(l)
			if err != nil {
				t.Fatal(err)
			}
			// A second creation keeps the pair, even when asked for another algorithm.
			if err := b.GenerateKeyPair(l, []hsm.Algorithm{hsm.RSA2048}); err != nil {
				t.Fatal(err)
			}
			pub2, _ := b.PublicKey(l)
			if !pub1.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub2) {
				t.Fatal("existing key pair was replaced")
			}
			switch pub := pub1.(type) {
			case *ecdsa.PublicKey:
				if pub.Curve != elliptic.P256() {
					t.Fatalf("curve %s", pub.Curve.Params().Name)
				}
				sig, err := b.SignECDSA(l, digest[:])
				if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
					t.Fatalf("ECDSA signature does not verify: %v", err)
				}
				if _, err := b.RSAPrivate(l, hsm.RSAPKCS1, digest[:]); !errors.Is(err, hsm.ErrInvalid) {
					t.Fatalf("RSA on an EC key = %v", err)
				}
			case *rsa.PublicKey:
				if pub.N.BitLen() != tc.bits || pub.E != 65537 {
					t.Fatalf("RSA key of %d bits, e=%d", pub.N.BitLen(), pub.E)
				}
				sig, err := b.RSAPrivate(l, hsm.RSAPKCS1, append(append([]byte{}, sha256DigestInfo...), digest[:]...))
				if err != nil {
					t.Fatal(err)
				}
				if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
					t.Fatal(err)
				}
				// Raw: the input is the padded block; the answer is the same signature.
				k := pub.Size()
				em := append([]byte{0, 1}, bytes.Repeat([]byte{0xff}, k-3-len(sha256DigestInfo)-32)...)
				em = append(append(append(em, 0), sha256DigestInfo...), digest[:]...)
				raw, err := b.RSAPrivate(l, hsm.RSANoPadding, em)
				if err != nil || !bytes.Equal(raw, sig) {
					t.Fatalf("raw RSA = %x, %v; want %x", raw, err, sig)
				}
				tooBig := new(big.Int).Add(pub.N, big.NewInt(1)).FillBytes(make([]byte, k))
				for _, in := range [][]byte{em[1:], tooBig} {
					if _, err := b.RSAPrivate(l, hsm.RSANoPadding, in); !errors.Is(err, hsm.ErrInvalid) {
						t.Fatalf("raw RSA of a bad input = %v", err)
					}
				}
				if _, err := b.RSAPrivate(l, hsm.RSAPKCS1, make([]byte, k)); !errors.Is(err, hsm.ErrInvalid) {
					t.Fatalf("PKCS#1 of a too long input = %v", err)
				}
				if _, err := b.SignECDSA(l, digest[:]); !errors.Is(err, hsm.ErrInvalid) {
					t.Fatalf("ECDSA on an RSA key = %v", err)
				}
			}
		})
	}

	t.Run("preference-order", func(t *testing.T) {
		l := loc(tk, "pref")
		if err := b.GenerateKeyPair(l, []hsm.Algorithm{hsm.RSA2048, hsm.ECP256}); err != nil {
			t.Fatal(err)
		}
		if pub, _ := b.PublicKey(l); pub == nil {
			t.Fatal("no key")
		} else if _, ok := pub.(*rsa.PublicKey); !ok {
			t.Fatalf("first preference not used: %T", pub)
		}
	})

	t.Run("move-and-delete", func(t *testing.T) {
		from, to := loc(tk, "pair-ec-p256"), loc(tk, "pref")
		want, _ := b.PublicKey(from)
		if err := b.Move(from, to); err != nil {
			t.Fatal(err)
		}
		if ok, _ := b.HasKeyPair(from); ok {
			t.Fatal("source still there")
		}
		got, err := b.PublicKey(to)
		if err != nil || !want.(*ecdsa.PublicKey).Equal(got) {
			t.Fatalf("moved key = %v, %v", got, err)
		}
		if err := b.Move(from, to); !errors.Is(err, hsm.ErrNotFound) {
			t.Fatalf("move of a missing key = %v", err)
		}
		other := hsm.Location{URI: strings.Replace(to.URI, "token=", "token=x", 1)}
		if err := b.Move(to, other); !errors.Is(err, hsm.ErrInvalid) {
			t.Fatalf("move across tokens = %v", err)
		}
		for range 2 {
			if err := b.DeleteKeyPair(to); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.SignECDSA(to, digest[:]); !errors.Is(err, hsm.ErrNotFound) {
			t.Fatalf("sign after delete = %v", err)
		}
	})

	t.Run("preloaded-without-object", func(t *testing.T) {
		// No object attribute: the first key pair of the token (upstream).
		l := hsm.Location{URI: tk.URI()}
		if ok, err := b.HasKeyPair(l); err != nil || !ok {
			t.Fatalf("HasKeyPair = %v, %v", ok, err)
		}
	})
}
