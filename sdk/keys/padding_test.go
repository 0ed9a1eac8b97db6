package keys

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"testing"
)

// rawSign is the private-key operation keyd applies for RSA-NO-PADDING.
func rawSign(priv *rsa.PrivateKey, em []byte) []byte {
	m := new(big.Int).Exp(new(big.Int).SetBytes(em), priv.D, priv.N)
	return m.FillBytes(make([]byte, priv.Size()))
}

func TestClientSidePaddingVerifiesWithTheStandardLibrary(t *testing.T) {
	for _, bits := range []int{2048, 2049, 3072} {
		priv, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256([]byte("message"))
		em, err := emsaPKCS1v15(&priv.PublicKey, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(&priv.PublicKey, crypto.SHA256, digest[:], rawSign(priv, em)); err != nil {
			t.Errorf("%d bits PKCS#1 v1.5: %v", bits, err)
		}
		for _, salt := range []int{rsa.PSSSaltLengthEqualsHash, rsa.PSSSaltLengthAuto, 0, 20} {
			opts := &rsa.PSSOptions{SaltLength: salt, Hash: crypto.SHA256}
			em, err := emsaPSS(rand.Reader, &priv.PublicKey, digest[:], opts)
			if err != nil {
				t.Fatal(err)
			}
			verify := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}
			if err := rsa.VerifyPSS(&priv.PublicKey, crypto.SHA256, digest[:], rawSign(priv, em), verify); err != nil {
				t.Errorf("%d bits PSS salt %d: %v", bits, salt, err)
			}
		}
	}
}

func TestPaddingRefusesMismatchedDigests(t *testing.T) {
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := emsaPKCS1v15(&priv.PublicKey, []byte("short"), crypto.SHA256); err == nil {
		t.Error("PKCS#1 accepted a digest of the wrong size")
	}
	if _, err := emsaPSS(rand.Reader, &priv.PublicKey, []byte("short"), &rsa.PSSOptions{Hash: crypto.SHA256}); err == nil {
		t.Error("PSS accepted a digest of the wrong size")
	}
}
