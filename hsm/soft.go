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

	"filippo.io/bigmod"
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

// rsaRaw computes in^d mod n for an input already in [0, n). It runs in constant time
// with filippo.io/bigmod (the standard library's bigmod, exported): big.Int.Exp leaks
// the secret exponent through timing to co-resident processes, and the standard
// library has no raw private operation (the broker's signer builds PKCS#1 and PSS
// padding on the client side). Constant time makes blinding unnecessary.
func rsaRaw(priv *rsa.PrivateKey, in []byte) ([]byte, error) {
	k := priv.Size()
	if len(in) != k {
		return nil, fmt.Errorf("raw RSA input of %d bytes, modulus is %d: %w", len(in), k, ErrInvalid)
	}
	if priv.N.Bit(0) == 0 {
		return nil, fmt.Errorf("raw RSA: the key's modulus is even: %w", ErrInvalid)
	}
	N, err := bigmod.NewModulus(priv.N.Bytes())
	if err != nil {
		return nil, fmt.Errorf("raw RSA modulus: %v: %w", err, ErrInvalid)
	}
	c, err := bigmod.NewNat().SetBytes(in, N)
	if err != nil {
		return nil, fmt.Errorf("raw RSA input not below the modulus: %w", ErrInvalid)
	}
	var m *bigmod.Nat
	if crt, ok := crtValues(priv); ok {
		m = crtExp(c, N, crt)
	} else {
		if priv.D == nil || priv.D.Sign() <= 0 || priv.D.Cmp(priv.N) >= 0 {
			return nil, fmt.Errorf("raw RSA: the key's private exponent is missing or out of range: %w", ErrInvalid)
		}
		// No usable CRT values (a key built by hand or with more than two primes):
		// the full exponent, still constant time, about three times slower.
		m = bigmod.NewNat().Exp(c, priv.D.FillBytes(make([]byte, k)), N)
	}
	// A fault in the computation (or CRT values that do not belong to the key) would
	// give an output that reveals a factor of N; check it with the public exponent,
	// as the standard library does, and answer nothing rather than a wrong result.
	if bigmod.NewNat().ExpShortVarTime(m, uint(priv.E), N).Equal(c) != 1 {
		return nil, errors.New("raw RSA: the result does not verify with the public key")
	}
	return m.Bytes(N), nil
}

// crt holds a two-prime key's CRT parameters; exponents are padded to the size of
// their prime so that their length leaks nothing.
type crt struct {
	p, q   *bigmod.Modulus
	dP, dQ []byte
	qInv   *bigmod.Nat
}

// crtValues takes the key's precomputed CRT values, if it has all of them.
func crtValues(priv *rsa.PrivateKey) (crt, bool) {
	pc := priv.Precomputed
	if len(priv.Primes) != 2 || pc.Dp == nil || pc.Dq == nil || pc.Qinv == nil {
		return crt{}, false
	}
	P, Q := priv.Primes[0], priv.Primes[1]
	if P == nil || Q == nil || P.Bit(0) == 0 || Q.Bit(0) == 0 {
		// bigmod exponentiates only modulo odd numbers.
		return crt{}, false
	}
	if pc.Dp.Sign() < 0 || pc.Dq.Sign() < 0 || pc.Dp.Cmp(P) >= 0 || pc.Dq.Cmp(Q) >= 0 {
		return crt{}, false
	}
	p, err := bigmod.NewModulus(P.Bytes())
	if err != nil {
		return crt{}, false
	}
	q, err := bigmod.NewModulus(Q.Bytes())
	if err != nil {
		return crt{}, false
	}
	qInv, err := bigmod.NewNat().SetBytes(pc.Qinv.Bytes(), p)
	if err != nil {
		return crt{}, false
	}
	return crt{
		p: p, q: q,
		dP:   pc.Dp.FillBytes(make([]byte, p.Size())),
		dQ:   pc.Dq.FillBytes(make([]byte, q.Size())),
		qInv: qInv,
	}, true
}

// crtExp is Garner's recombination, as in the standard library's RSA decryption:
// m1 = c^dP mod p, m2 = c^dQ mod q, m = m2 + q*((m1-m2)*qInv mod p).
func crtExp(c *bigmod.Nat, N *bigmod.Modulus, k crt) *bigmod.Nat {
	t := bigmod.NewNat()
	m := bigmod.NewNat().Exp(t.Mod(c, k.p), k.dP, k.p)
	m2 := bigmod.NewNat().Exp(t.Mod(c, k.q), k.dQ, k.q)
	m.Sub(t.Mod(m2, k.p), k.p)
	m.Mul(k.qInv, k.p)
	m.ExpandFor(N).Mul(t.Mod(k.q.Nat(), N), N)
	m.Add(m2.ExpandFor(N), N)
	return m
}
