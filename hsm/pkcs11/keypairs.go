package pkcs11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/hsm/pkcs11/p11uri"
)

var curves = []struct {
	oid   asn1.ObjectIdentifier
	curve elliptic.Curve
}{
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}, elliptic.P256()},
	{asn1.ObjectIdentifier{1, 3, 132, 0, 34}, elliptic.P384()},
	{asn1.ObjectIdentifier{1, 3, 132, 0, 35}, elliptic.P521()},
}

// pairTemplates are the public and private halves; the private key is sensitive and
// never extractable. CKA_WRAP/CKA_UNWRAP are left out: tpm2-pkcs11 refuses them
// (upstream's note).
func pairTemplates(u *p11uri.URI, alg hsm.Algorithm) (uint, []*pkcs11.Attribute, []*pkcs11.Attribute, error) {
	pub := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
	}
	priv := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
	}
	if u.HasObject {
		pub = append(pub, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
		priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
	}
	switch alg {
	case hsm.ECP256:
		oid, _ := asn1.Marshal(curves[0].oid)
		pub = append(pub, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oid))
		priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC))
		return pkcs11.CKM_EC_KEY_PAIR_GEN, pub, priv, nil
	case hsm.RSA2048, hsm.RSA4096:
		bits := 2048
		if alg == hsm.RSA4096 {
			bits = 4096
		}
		pub = append(pub,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
		priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA))
		return pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pub, priv, nil
	}
	return 0, nil, nil, fmt.Errorf("algorithm %q: %w", alg, hsm.ErrInvalid)
}

// pair finds both halves; a key pair exists only when both do (upstream).
func (c *conn) pair(u *p11uri.URI) (pub, priv pkcs11.ObjectHandle, ok bool, err error) {
	pub, ok, err = c.findOne(u, pkcs11.CKO_PUBLIC_KEY)
	if err != nil || !ok {
		return 0, 0, false, err
	}
	priv, ok, err = c.findOne(u, pkcs11.CKO_PRIVATE_KEY)
	if err != nil || !ok {
		return 0, 0, false, err
	}
	return pub, priv, true, nil
}

// GenerateKeyPair creates a key pair in the token unless one is there, trying each
// algorithm in order (PKCS#11 tries them all; files use the first only).
func (b *Backend) GenerateKeyPair(loc hsm.Location, algs []hsm.Algorithm) error {
	if len(algs) == 0 {
		return fmt.Errorf("no algorithm: %w", hsm.ErrInvalid)
	}
	return b.do(loc, "generate key pair", func(c *conn, u *p11uri.URI) error {
		if _, _, ok, err := c.pair(u); err != nil || ok {
			return err
		}
		// A half pair left by a failed generation or a move is replaced.
		if u.HasObject {
			if err := c.destroyAll(u, pkcs11.CKO_PUBLIC_KEY, pkcs11.CKO_PRIVATE_KEY); err != nil {
				return err
			}
		}
		var errs []error
		for _, alg := range algs {
			mech, pub, priv, err := pairTemplates(u, alg)
			if err == nil {
				_, _, err = c.ctx.GenerateKeyPair(c.s, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pub, priv)
			}
			if err == nil {
				return nil
			}
			if classify(err) != failOp {
				return err
			}
			errs = append(errs, fmt.Errorf("%s: %w", alg, err))
		}
		return fmt.Errorf("no preferred algorithm could be generated: %w", errors.Join(errs...))
	})
}

// HasKeyPair reports whether both halves are in the token.
func (b *Backend) HasKeyPair(loc hsm.Location) (bool, error) {
	var ok bool
	err := b.do(loc, "find key pair", func(c *conn, u *p11uri.URI) error {
		var err error
		_, _, ok, err = c.pair(u)
		return err
	})
	return ok, err
}

// DeleteKeyPair removes both halves; none is fine.
func (b *Backend) DeleteKeyPair(loc hsm.Location) error {
	return b.do(loc, "delete key pair", func(c *conn, u *p11uri.URI) error {
		if !u.HasObject {
			return fmt.Errorf("%w: %w", errNoLabel, hsm.ErrInvalid)
		}
		return c.destroyAll(u, pkcs11.CKO_PUBLIC_KEY, pkcs11.CKO_PRIVATE_KEY)
	})
}

// Move relabels from's halves as to, replacing to's (upstream: delete the destination
// label, then relabel). Both must be in the same token.
func (b *Backend) Move(from, to hsm.Location) error {
	fu, err := p11uri.Parse(from.URI)
	if err != nil {
		return fmt.Errorf("move from %s: %w: %w", from, err, hsm.ErrInvalid)
	}
	tu, err := p11uri.Parse(to.URI)
	if err != nil {
		return fmt.Errorf("move to %s: %w: %w", to, err, hsm.ErrInvalid)
	}
	if fu.TokenKey() != tu.TokenKey() {
		return fmt.Errorf("move from %s to %s: not the same token: %w", fu, tu, hsm.ErrInvalid)
	}
	if !fu.HasObject || !tu.HasObject {
		return fmt.Errorf("move from %s to %s: %w: %w", fu, tu, errNoLabel, hsm.ErrInvalid)
	}
	return b.do(from, "move key pair", func(c *conn, _ *p11uri.URI) error {
		pub, priv, ok, err := c.pair(fu)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("source key pair: %w", hsm.ErrNotFound)
		}
		if err := c.destroyAll(tu, pkcs11.CKO_PUBLIC_KEY, pkcs11.CKO_PRIVATE_KEY); err != nil {
			return err
		}
		label := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, tu.Object)}
		for _, class := range []uint{pkcs11.CKO_PUBLIC_KEY, pkcs11.CKO_PRIVATE_KEY} {
			c.t.forget(class, fu.Object)
		}
		for _, o := range []pkcs11.ObjectHandle{priv, pub} {
			if err := c.ctx.SetAttributeValue(c.s, o, label); err != nil {
				return fmt.Errorf("relabel: %w", err)
			}
		}
		return nil
	})
}

// PublicKey reads the public half: *ecdsa.PublicKey or *rsa.PublicKey.
func (b *Backend) PublicKey(loc hsm.Location) (crypto.PublicKey, error) {
	var pk crypto.PublicKey
	err := b.do(loc, "read public key", func(c *conn, u *p11uri.URI) error {
		pub, _, ok, err := c.pair(u)
		if err != nil {
			return err
		}
		if !ok {
			return hsm.ErrNotFound
		}
		pk, err = c.publicKey(pub)
		return err
	})
	return pk, err
}

func (c *conn) publicKey(o pkcs11.ObjectHandle) (crypto.PublicKey, error) {
	kt, err := c.keyType(o)
	if err != nil {
		return nil, err
	}
	switch kt {
	case pkcs11.CKK_EC:
		v, err := c.attrs(o, pkcs11.CKA_EC_PARAMS, pkcs11.CKA_EC_POINT)
		if err != nil {
			return nil, err
		}
		return ecPublicKey(v[0], v[1])
	case pkcs11.CKK_RSA:
		v, err := c.attrs(o, pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT)
		if err != nil {
			return nil, err
		}
		e := new(big.Int).SetBytes(v[1])
		if len(v[0]) == 0 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return nil, errors.New("token returned an unusable RSA public key")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(v[0]), E: int(e.Int64())}, nil
	}
	return nil, fmt.Errorf("key type %#x is neither EC nor RSA: %w", kt, hsm.ErrInvalid)
}

// ecPublicKey decodes CKA_EC_PARAMS (a named curve OID) and CKA_EC_POINT, which tokens
// give as a DER OCTET STRING around the SEC1 point (some give the bare point).
func ecPublicKey(params, point []byte) (*ecdsa.PublicKey, error) {
	var oid asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(params, &oid); err != nil || len(rest) != 0 {
		return nil, errors.New("EC key without a named curve")
	}
	var curve elliptic.Curve
	for _, c := range curves {
		if c.oid.Equal(oid) {
			curve = c.curve
		}
	}
	if curve == nil {
		return nil, fmt.Errorf("EC curve %s is not supported: %w", oid, hsm.ErrInvalid)
	}
	// A bare uncompressed point is 1+2n bytes; the wrapped one is longer.
	n := (curve.Params().BitSize + 7) / 8
	if len(point) != 1+2*n {
		var inner []byte
		if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
			point = inner
		}
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("token returned an invalid EC point: %w", err)
	}
	return pub, nil
}

// private finds both halves and checks the private key's type.
func (c *conn) private(u *p11uri.URI, want uint) (pub, priv pkcs11.ObjectHandle, err error) {
	pub, priv, ok, err := c.pair(u)
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		return 0, 0, hsm.ErrNotFound
	}
	kt, err := c.keyType(priv)
	if err != nil {
		return 0, 0, err
	}
	if kt != want {
		return 0, 0, fmt.Errorf("the key pair is not of the mechanism's type: %w", hsm.ErrInvalid)
	}
	return pub, priv, nil
}

// sign runs one single-part signature.
func (c *conn) sign(o pkcs11.ObjectHandle, mech uint, in []byte) ([]byte, error) {
	if err := c.ctx.SignInit(c.s, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, o); err != nil {
		return nil, clientError(fmt.Errorf("sign init: %w", err))
	}
	out, err := c.ctx.Sign(c.s, in)
	if err != nil {
		return nil, clientError(fmt.Errorf("sign: %w", err))
	}
	return out, nil
}

// SignECDSA is CKM_ECDSA over the caller's digest; the token's r||s is DER-encoded.
func (b *Backend) SignECDSA(loc hsm.Location, digest []byte) ([]byte, error) {
	var out []byte
	err := b.do(loc, "ECDSA sign", func(c *conn, u *p11uri.URI) error {
		_, o, err := c.private(u, pkcs11.CKK_EC)
		if err != nil {
			return err
		}
		raw, err := c.sign(o, pkcs11.CKM_ECDSA, digest)
		if err != nil {
			return err
		}
		out, err = derSignature(raw)
		return err
	})
	return out, err
}

func derSignature(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, fmt.Errorf("token returned a %d-byte ECDSA signature", len(raw))
	}
	r := new(big.Int).SetBytes(raw[:len(raw)/2])
	s := new(big.Int).SetBytes(raw[len(raw)/2:])
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(r)
		b.AddASN1BigInt(s)
	})
	return b.Bytes()
}

// RSAPrivate is the private-key primitive: CKM_RSA_PKCS (type-1 padding of the input)
// or CKM_RSA_X_509 (raw, modulus-sized input, as the file store requires).
func (b *Backend) RSAPrivate(loc hsm.Location, padding hsm.RSAPadding, in []byte) ([]byte, error) {
	var out []byte
	err := b.do(loc, "RSA private-key operation", func(c *conn, u *p11uri.URI) error {
		pub, o, err := c.private(u, pkcs11.CKK_RSA)
		if err != nil {
			return err
		}
		// Inputs are checked here, as the file store does: tokens answer bad ones with
		// anything up to CKR_GENERAL_ERROR (SoftHSM).
		v, err := c.attrs(pub, pkcs11.CKA_MODULUS)
		if err != nil {
			return err
		}
		n := new(big.Int).SetBytes(v[0])
		k := (n.BitLen() + 7) / 8
		mech := uint(pkcs11.CKM_RSA_PKCS)
		switch {
		case padding == hsm.RSANoPadding:
			mech = pkcs11.CKM_RSA_X_509
			if len(in) != k || new(big.Int).SetBytes(in).Cmp(n) >= 0 {
				return fmt.Errorf("raw RSA input of %d bytes for a %d-byte modulus, or not below it: %w", len(in), k, hsm.ErrInvalid)
			}
		case len(in) > k-11:
			return fmt.Errorf("PKCS#1 v1.5 input of %d bytes for a %d-byte modulus: %w", len(in), k, hsm.ErrInvalid)
		}
		out, err = c.sign(o, mech, in)
		return err
	})
	return out, err
}
