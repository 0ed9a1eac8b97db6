package hsm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
)

// Software crypto shared by the file backend and by derived keys, which always run in
// software with the derived key.

// HMACSHA256 is HMAC-SHA256(key, msg).
func HMACSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

const (
	aeadV1  = 0x01 // tag || ciphertext (IoT Edge 1.1, decrypt only)
	aeadV2  = 0x02 // ciphertext || tag
	tagSize = 16
	maxIV   = 128
)

func gcm(key, iv []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("AEAD needs a 32-byte key, have %d bytes: %w", len(key), ErrInvalid)
	}
	// Upstream's OpenSSL accepts IVs of 1 to 128 bytes; outside that it fails with a 500.
	// A client's bad IV is answered 400 here (docs/RATIONALE.md).
	if len(iv) == 0 || len(iv) > maxIV {
		return nil, fmt.Errorf("AEAD IV of %d bytes (1 to %d accepted): %w", len(iv), maxIV, ErrInvalid)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithNonceSize(block, len(iv))
}

// SealV2 encrypts with AES-256-GCM and returns upstream's version-2 layout.
func SealV2(key, iv, aad, plaintext []byte) ([]byte, error) {
	a, err := gcm(key, iv)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1, 1+len(plaintext)+tagSize)
	out[0] = aeadV2
	return a.Seal(out, iv, plaintext, aad), nil
}

// ErrAuthentication is a ciphertext whose tag does not verify (upstream answers 500).
var ErrAuthentication = errors.New("AEAD tag mismatch")

// OpenVersioned decrypts a version-1 (when allowV1) or version-2 ciphertext.
func OpenVersioned(key, iv, aad, ciphertext []byte, allowV1 bool) ([]byte, error) {
	if len(ciphertext) < 1+tagSize {
		return nil, fmt.Errorf("ciphertext of %d bytes is too short: %w", len(ciphertext), ErrInvalid)
	}
	var sealed []byte
	switch ciphertext[0] {
	case aeadV2:
		sealed = ciphertext[1:]
	case aeadV1:
		if !allowV1 {
			return nil, fmt.Errorf("ciphertext version 1 is not supported here: %w", ErrInvalid)
		}
		rest := ciphertext[1:]
		sealed = append(append([]byte{}, rest[tagSize:]...), rest[:tagSize]...)
	default:
		return nil, fmt.Errorf("unknown ciphertext version %d: %w", ciphertext[0], ErrInvalid)
	}
	a, err := gcm(key, iv)
	if err != nil {
		return nil, err
	}
	pt, err := a.Open(nil, iv, sealed, aad)
	if err != nil {
		return nil, ErrAuthentication
	}
	return pt, nil
}

// RSAPrivateOp applies the RSA private-key primitive in software.
func RSAPrivateOp(priv *rsa.PrivateKey, padding RSAPadding, in []byte) ([]byte, error) {
	switch padding {
	case RSAPKCS1:
		// Hash 0: the input is signed as given (the caller built the DigestInfo).
		out, err := rsa.SignPKCS1v15(rand.Reader, priv, 0, in)
		if err != nil {
			return nil, fmt.Errorf("RSA PKCS#1 v1.5: %v: %w", err, ErrInvalid)
		}
		return out, nil
	case RSANoPadding:
		return rsaRaw(priv, in)
	}
	return nil, fmt.Errorf("unknown RSA padding: %w", ErrInvalid)
}

// rsaRaw computes in^d mod n with blinding; the standard library has no raw private
// operation, and the broker's signer builds PKCS#1 and PSS padding on the client side.
func rsaRaw(priv *rsa.PrivateKey, in []byte) ([]byte, error) {
	k := priv.Size()
	if len(in) != k {
		return nil, fmt.Errorf("raw RSA input of %d bytes, modulus is %d: %w", len(in), k, ErrInvalid)
	}
	n := priv.N
	c := new(big.Int).SetBytes(in)
	if c.Cmp(n) >= 0 {
		return nil, fmt.Errorf("raw RSA input not below the modulus: %w", ErrInvalid)
	}
	var r, rInv *big.Int
	for {
		var err error
		r, err = rand.Int(rand.Reader, n)
		if err != nil {
			return nil, err
		}
		if r.Sign() == 0 {
			continue
		}
		if rInv = new(big.Int).ModInverse(r, n); rInv != nil {
			break
		}
	}
	e := big.NewInt(int64(priv.E))
	blinded := new(big.Int).Mul(c, new(big.Int).Exp(r, e, n))
	blinded.Mod(blinded, n)
	m := new(big.Int).Exp(blinded, priv.D, n)
	m.Mul(m, rInv).Mod(m, n)
	out := make([]byte, k)
	return m.FillBytes(out), nil
}
