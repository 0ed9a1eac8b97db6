package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
)

// Signer is a crypto.Signer whose private key stays in keyd: ECDSA through /sign, RSA
// through the raw private-key operation with the PKCS#1 v1.5 or PSS padding built here,
// as upstream's OpenSSL engine does. It works with crypto/tls and crypto/x509.
type Signer struct {
	client *Client
	handle string
	pub    crypto.PublicKey
	// Context is used for every signing request; it defaults to context.Background().
	Context context.Context
}

var oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}

// Signer returns a crypto.Signer for a key-pair handle, reading its public key from keyd.
func (c *Client) Signer(ctx context.Context, handle string) (*Signer, error) {
	pub, err := c.PublicKey(ctx, handle)
	if err != nil {
		return nil, err
	}
	return &Signer{client: c, handle: handle, pub: pub, Context: context.Background()}, nil
}

// PublicKey rebuilds the public key of a key pair from its parameters.
func (c *Client) PublicKey(ctx context.Context, handle string) (crypto.PublicKey, error) {
	alg, err := c.Parameter(ctx, handle, "algorithm")
	if err != nil {
		return nil, fmt.Errorf("read key algorithm: %w", err)
	}
	param := func(name string) ([]byte, error) {
		v, err := c.Parameter(ctx, handle, name)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		return base64.StdEncoding.DecodeString(v)
	}
	switch alg {
	case "ECDSA":
		oidDER, err := param("ec-curve-oid")
		if err != nil {
			return nil, err
		}
		var oid asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(oidDER, &oid); err != nil || !oid.Equal(oidP256) {
			return nil, fmt.Errorf("EC curve %v: %w", oid, ErrUnsupportedKey)
		}
		point, err := param("ec-point")
		if err != nil {
			return nil, err
		}
		x, y := elliptic.UnmarshalCompressed(elliptic.P256(), point)
		if x == nil {
			return nil, errors.New("invalid EC point")
		}
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), uncompressed(x, y))
	case "RSA":
		n, err := param("rsa-modulus")
		if err != nil {
			return nil, err
		}
		e, err := param("rsa-exponent")
		if err != nil {
			return nil, err
		}
		ei := new(big.Int).SetBytes(e)
		if !ei.IsInt64() || ei.Int64() > 1<<31 {
			return nil, errors.New("RSA exponent out of range")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(ei.Int64())}, nil
	}
	return nil, fmt.Errorf("key algorithm %q: %w", alg, ErrUnsupportedKey)
}

// ErrUnsupportedKey is a key pair keyd holds but the sdk cannot rebuild: an EC curve
// other than P-256 (keyd answers no curve OID for those) or an unknown algorithm.
var ErrUnsupportedKey = errors.New("unsupported key type")

func uncompressed(x, y *big.Int) []byte {
	out := make([]byte, 65)
	out[0] = 4
	x.FillBytes(out[1:33])
	y.FillBytes(out[33:])
	return out
}

// Public returns the public key.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Handle returns the key handle the signer uses.
func (s *Signer) Handle() string { return s.handle }

// Sign signs digest, which must be the hash named by opts.
func (s *Signer) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx := s.Context
	if ctx == nil {
		ctx = context.Background()
	}
	switch pub := s.pub.(type) {
	case *ecdsa.PublicKey:
		return s.client.SignECDSA(ctx, s.handle, digest)
	case *rsa.PublicKey:
		var em []byte
		var err error
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			em, err = emsaPSS(rand, pub, digest, pss)
		} else {
			em, err = emsaPKCS1v15(pub, digest, opts.HashFunc())
		}
		if err != nil {
			return nil, err
		}
		return s.client.RSAPrivate(ctx, s.handle, AlgRSANoPadding, em)
	}
	return nil, errors.New("unsupported key type")
}
