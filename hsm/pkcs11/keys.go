package pkcs11

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/hsm/pkcs11/p11uri"
)

// secretKind is the object type a symmetric key's usage selects (api-keys.md §4).
type secretKind int

const (
	secretHMAC secretKind = iota // derive, sign: generic secret for CKM_SHA256_HMAC
	secretAES                    // encrypt: AES for CKM_AES_GCM
)

// kindOf maps usage as upstream does; encrypt together with derive or sign is refused.
func kindOf(usage hsm.Usage) (secretKind, error) {
	switch {
	case usage&hsm.UsageEncrypt != 0 && usage&(hsm.UsageDerive|hsm.UsageSign) != 0:
		return 0, fmt.Errorf("usage encrypt cannot be combined with derive or sign in a PKCS#11 token: %w", hsm.ErrInvalid)
	case usage&hsm.UsageEncrypt != 0:
		return secretAES, nil
	case usage != 0:
		return secretHMAC, nil
	}
	return 0, fmt.Errorf("empty usage: %w", hsm.ErrInvalid)
}

// minHMACKey is the shortest generic secret used for HMAC-SHA256: tokens refuse shorter
// keys (SoftHSM: CKR_KEY_SIZE_RANGE), so shorter imports go to the file store.
const minHMACKey = 32

// secretTemplate is a token object that never leaves the token.
func secretTemplate(u *p11uri.URI, kind secretKind) []*pkcs11.Attribute {
	t := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
	}
	if u.HasObject {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
	}
	if kind == secretAES {
		return append(t,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true))
	}
	return append(t,
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true))
}

// GenerateKey creates a symmetric key in the token unless one with the label exists.
// A token that cannot generate or use the kind answers hsm.ErrUnsupported, so the
// keystore falls back to the file (upstream's rule).
func (b *Backend) GenerateKey(loc hsm.Location, usage hsm.Usage) error {
	kind, err := kindOf(usage)
	if err != nil {
		return err
	}
	return b.do(loc, "generate key", func(c *conn, u *p11uri.URI) error {
		if _, ok, err := c.findOne(u, pkcs11.CKO_SECRET_KEY); err != nil || ok {
			return err
		}
		if kind == secretHMAC {
			tmpl := append(secretTemplate(u, kind), pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32))
			_, err := c.ctx.GenerateKey(c.s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)}, tmpl)
			return generated(err)
		}
		// AES-256, else AES-128 (upstream), then prove the token does AES-GCM with it.
		var o pkcs11.ObjectHandle
		var err error
		for _, n := range []int{32, 16} {
			tmpl := append(secretTemplate(u, kind), pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, n))
			if o, err = c.ctx.GenerateKey(c.s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl); err == nil {
				break
			}
		}
		if err != nil {
			return generated(err)
		}
		return c.selfTestAES(o)
	})
}

func generated(err error) error {
	if err == nil {
		return nil
	}
	if unsupported(err) || rv(err) == pkcs11.CKR_TEMPLATE_INCONSISTENT || rv(err) == pkcs11.CKR_ATTRIBUTE_VALUE_INVALID || rv(err) == pkcs11.CKR_KEY_SIZE_RANGE {
		return fmt.Errorf("generate key: %w: %w", err, hsm.ErrUnsupported)
	}
	return fmt.Errorf("generate key: %w", err)
}

// selfTestAES encrypts and decrypts with o; a token that cannot loses the key and the
// keystore falls back to the file, as upstream does.
func (c *conn) selfTestAES(o pkcs11.ObjectHandle) error {
	iv, aad, pt := []byte("123456789012"), []byte("someaad"), []byte("someplaintext")
	ct, err := c.gcm(o, true, iv, aad, pt)
	if err == nil {
		var back []byte
		if back, err = c.gcm(o, false, iv, aad, ct); err == nil && !bytes.Equal(back, pt) {
			err = errors.New("AES-GCM round trip changed the plaintext")
		}
	}
	if err == nil {
		return nil
	}
	if derr := c.ctx.DestroyObject(c.s, o); derr != nil {
		return fmt.Errorf("AES-GCM self-test failed (%v), and the key could not be removed: %w", err, derr)
	}
	return fmt.Errorf("AES-GCM self-test: %w: %w", err, hsm.ErrUnsupported)
}

// ImportKey replaces the key labelled as loc says with key. Key bytes the token cannot
// take as the usage's kind answer hsm.ErrUnsupported (file fallback).
func (b *Backend) ImportKey(loc hsm.Location, key []byte, usage hsm.Usage) error {
	kind, err := kindOf(usage)
	if err != nil {
		return err
	}
	if len(key) == 0 {
		return fmt.Errorf("empty key: %w", hsm.ErrInvalid)
	}
	return b.do(loc, "import key", func(c *conn, u *p11uri.URI) error {
		// Remove the old key first: if the token refuses the new one, the key goes to the
		// file and a stale token object must not shadow it.
		if u.HasObject {
			if err := c.destroyAll(u, pkcs11.CKO_SECRET_KEY); err != nil {
				return err
			}
		}
		switch {
		case kind == secretHMAC && len(key) < minHMACKey:
			return fmt.Errorf("a %d-byte HMAC key is shorter than tokens accept: %w", len(key), hsm.ErrUnsupported)
		case kind == secretAES && len(key) != 16 && len(key) != 24 && len(key) != 32:
			return fmt.Errorf("a %d-byte key is not an AES key: %w", len(key), hsm.ErrUnsupported)
		}
		tmpl := append(secretTemplate(u, kind), pkcs11.NewAttribute(pkcs11.CKA_VALUE, key))
		o, err := c.ctx.CreateObject(c.s, tmpl)
		if err != nil {
			// Upstream falls back on any C_CreateObject failure: some tokens answer
			// CKR_GENERAL_ERROR for keys they cannot hold.
			if classify(err) != failOp && rv(err) != pkcs11.CKR_GENERAL_ERROR {
				return fmt.Errorf("create key object: %w", err)
			}
			return fmt.Errorf("create key object: %w: %w", err, hsm.ErrUnsupported)
		}
		if kind == secretAES {
			return c.selfTestAES(o)
		}
		return nil
	})
}

// HasKey reports whether a secret key object is labelled as loc says.
func (b *Backend) HasKey(loc hsm.Location) (bool, error) {
	var ok bool
	err := b.do(loc, "find key", func(c *conn, u *p11uri.URI) error {
		var err error
		_, ok, err = c.findOne(u, pkcs11.CKO_SECRET_KEY)
		return err
	})
	return ok, err
}

// DeleteKey removes the secret keys labelled as loc says; none is fine.
func (b *Backend) DeleteKey(loc hsm.Location) error {
	return b.do(loc, "delete key", func(c *conn, u *p11uri.URI) error {
		if !u.HasObject {
			return fmt.Errorf("%w: %w", errNoLabel, hsm.ErrInvalid)
		}
		return c.destroyAll(u, pkcs11.CKO_SECRET_KEY)
	})
}

// secret finds the key or answers hsm.ErrNotFound.
func (c *conn) secret(u *p11uri.URI) (pkcs11.ObjectHandle, error) {
	o, ok, err := c.findOne(u, pkcs11.CKO_SECRET_KEY)
	if err == nil && !ok {
		err = hsm.ErrNotFound
	}
	return o, err
}

// HMAC is CKM_SHA256_HMAC in the token.
func (b *Backend) HMAC(loc hsm.Location, msg []byte) ([]byte, error) {
	var out []byte
	err := b.do(loc, "HMAC-SHA256", func(c *conn, u *p11uri.URI) error {
		o, err := c.secret(u)
		if err != nil {
			return err
		}
		if err := c.ctx.SignInit(c.s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, o); err != nil {
			return clientError(fmt.Errorf("sign init: %w", err))
		}
		out, err = c.ctx.Sign(c.s, msg)
		return clientError(err)
	})
	return out, err
}

// gcm runs one AES-GCM operation with a 128-bit tag.
func (c *conn) gcm(o pkcs11.ObjectHandle, encrypt bool, iv, aad, in []byte) ([]byte, error) {
	params := pkcs11.NewGCMParams(iv, aad, 128)
	defer params.Free()
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
	if encrypt {
		if err := c.ctx.EncryptInit(c.s, mech, o); err != nil {
			return nil, fmt.Errorf("encrypt init: %w", err)
		}
		return c.ctx.Encrypt(c.s, in)
	}
	if err := c.ctx.DecryptInit(c.s, mech, o); err != nil {
		return nil, fmt.Errorf("decrypt init: %w", err)
	}
	return c.ctx.Decrypt(c.s, in)
}

const (
	aeadV2  = 0x02
	tagSize = 16
	maxIV   = 128
)

func checkIV(iv []byte) error {
	// The same bounds as the file store, so that both answer a bad IV alike.
	if len(iv) == 0 || len(iv) > maxIV {
		return fmt.Errorf("AEAD IV of %d bytes (1 to %d accepted): %w", len(iv), maxIV, hsm.ErrInvalid)
	}
	return nil
}

// AEADEncrypt is the token's AES-GCM; the answer is version 2 (ciphertext || tag).
func (b *Backend) AEADEncrypt(loc hsm.Location, iv, aad, plaintext []byte) ([]byte, error) {
	if err := checkIV(iv); err != nil {
		return nil, err
	}
	var out []byte
	err := b.do(loc, "AES-GCM encrypt", func(c *conn, u *p11uri.URI) error {
		o, err := c.secret(u)
		if err != nil {
			return err
		}
		ct, err := c.gcm(o, true, iv, aad, plaintext)
		if err != nil {
			return clientError(err)
		}
		out = append([]byte{aeadV2}, ct...)
		return nil
	})
	return out, err
}

// AEADDecrypt accepts only version 2 ciphertexts, as upstream does for PKCS#11 keys.
func (b *Backend) AEADDecrypt(loc hsm.Location, iv, aad, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < 1+tagSize {
		return nil, fmt.Errorf("ciphertext of %d bytes is too short: %w", len(ciphertext), hsm.ErrInvalid)
	}
	if ciphertext[0] != aeadV2 {
		return nil, fmt.Errorf("ciphertext version %d: PKCS#11 keys decrypt only version 2: %w", ciphertext[0], hsm.ErrInvalid)
	}
	if err := checkIV(iv); err != nil {
		return nil, err
	}
	var out []byte
	err := b.do(loc, "AES-GCM decrypt", func(c *conn, u *p11uri.URI) error {
		o, err := c.secret(u)
		if err != nil {
			return err
		}
		out, err = c.gcm(o, false, iv, aad, ciphertext[1:])
		if rv(err) == pkcs11.CKR_GENERAL_ERROR && c.verify() == nil {
			// SoftHSM answers a tag mismatch with CKR_GENERAL_ERROR; the token is fine.
			return fmt.Errorf("%w (%v)", hsm.ErrAuthentication, err) // %v: not a token failure
		}
		return clientError(err)
	})
	return out, err
}
