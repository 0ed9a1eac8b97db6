// Package file is the key store in files, laid out as upstream's libaziot-keys writes
// it (api-keys.md §4): a symmetric key is its raw bytes, a key pair is a PEM private key.
// A homedir written by upstream's keyd loads unchanged.
package file

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/internal/atomicfile"
)

// Store implements hsm.Backend over files.
type Store struct{}

var _ hsm.Backend = Store{}

func read(loc hsm.Location) ([]byte, error) {
	b, err := os.ReadFile(loc.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", loc, err)
	}
	return b, nil
}

func write(loc hsm.Location, b []byte) error {
	// Upstream creates the keys directory on demand.
	if err := atomicfile.MkdirAll(filepath.Dir(loc.Path), 0o700); err != nil {
		return fmt.Errorf("create key directory for %s: %w", loc, err)
	}
	return atomicfile.Write(loc.Path, b, 0o600)
}

// create writes a generated key where none was (existed false) or where an unusable one
// is (existed true). A key that appears meanwhile — another request creating the same
// ID — is kept if usable, so that concurrent creates agree on one key (the handle
// validation key above all: a second one would void the handles signed with the first).
func create(loc hsm.Location, b []byte, existed bool, usable func([]byte) bool) error {
	if existed {
		return write(loc, b)
	}
	if err := atomicfile.MkdirAll(filepath.Dir(loc.Path), 0o700); err != nil {
		return fmt.Errorf("create key directory for %s: %w", loc, err)
	}
	err := atomicfile.WriteNew(loc.Path, b, 0o600)
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	if cur, rerr := read(loc); rerr == nil && usable(cur) {
		return nil
	}
	return write(loc, b)
}

// GenerateKey writes 32 random bytes unless a non-empty key is there.
func (Store) GenerateKey(loc hsm.Location, _ hsm.Usage) error {
	b, err := read(loc)
	if err != nil {
		return err
	}
	if len(b) > 0 {
		return nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	return create(loc, key, b != nil, func(cur []byte) bool { return len(cur) > 0 })
}

// ImportKey overwrites the key with the given bytes.
func (Store) ImportKey(loc hsm.Location, key []byte, _ hsm.Usage) error {
	if len(key) == 0 {
		return fmt.Errorf("empty key: %w", hsm.ErrInvalid)
	}
	return write(loc, key)
}

func loadKey(loc hsm.Location) ([]byte, error) {
	b, err := read(loc)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		// Missing, or empty: upstream treats an empty file as an error on load.
		return nil, fmt.Errorf("key at %s: %w", loc, hsm.ErrNotFound)
	}
	return b, nil
}

// HasKey reports whether a non-empty key file exists.
func (Store) HasKey(loc hsm.Location) (bool, error) {
	b, err := read(loc)
	return len(b) > 0, err
}

// DeleteKey removes the file; a missing one is fine.
func (Store) DeleteKey(loc hsm.Location) error { return atomicfile.Remove(loc.Path) }

// HMAC is HMAC-SHA256 with the stored key.
func (Store) HMAC(loc hsm.Location, msg []byte) ([]byte, error) {
	key, err := loadKey(loc)
	if err != nil {
		return nil, err
	}
	return hsm.HMACSHA256(key, msg), nil
}

// AEADEncrypt seals with AES-256-GCM (version 2).
func (Store) AEADEncrypt(loc hsm.Location, iv, aad, pt []byte) ([]byte, error) {
	key, err := loadKey(loc)
	if err != nil {
		return nil, err
	}
	return hsm.SealV2(key, iv, aad, pt)
}

// AEADDecrypt opens version 1 and 2 ciphertexts.
func (Store) AEADDecrypt(loc hsm.Location, iv, aad, ct []byte) ([]byte, error) {
	key, err := loadKey(loc)
	if err != nil {
		return nil, err
	}
	return hsm.OpenVersioned(key, iv, aad, ct, true)
}

// parsePrivateKey accepts any PEM private key OpenSSL would read: PKCS#8, SEC1, PKCS#1.
func parsePrivateKey(b []byte) (crypto.Signer, error) {
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key")
		}
		var k any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		switch s := k.(type) {
		case *ecdsa.PrivateKey:
			return s, nil
		case *rsa.PrivateKey:
			return s, nil
		}
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
}

func loadKeyPair(loc hsm.Location) (crypto.Signer, error) {
	b, err := read(loc)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("key pair at %s: %w", loc, hsm.ErrNotFound)
	}
	k, err := parsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("key pair at %s: %v: %w", loc, err, hsm.ErrInvalid)
	}
	return k, nil
}

// GenerateKeyPair keeps a parsable key pair, else generates with the first algorithm only
// (upstream's file store does not try the others).
func (Store) GenerateKeyPair(loc hsm.Location, algs []hsm.Algorithm) error {
	b, err := read(loc)
	if err != nil {
		return err
	}
	if b != nil {
		if _, err := parsePrivateKey(b); err == nil {
			return nil
		}
	}
	var k any
	switch algs[0] {
	case hsm.ECP256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case hsm.RSA2048:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case hsm.RSA4096:
		k, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		return fmt.Errorf("algorithm %q: %w", algs[0], hsm.ErrInvalid)
	}
	if err != nil {
		return fmt.Errorf("generate %s key: %w", algs[0], err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return create(loc, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), b != nil, func(cur []byte) bool {
		_, err := parsePrivateKey(cur)
		return err == nil
	})
}

// HasKeyPair reports whether a parsable key pair is stored.
func (Store) HasKeyPair(loc hsm.Location) (bool, error) {
	b, err := read(loc)
	if err != nil || b == nil {
		return false, err
	}
	_, perr := parsePrivateKey(b)
	return perr == nil, nil
}

// DeleteKeyPair removes the file.
func (Store) DeleteKeyPair(loc hsm.Location) error { return atomicfile.Remove(loc.Path) }

// PublicKey parses the stored key and returns its public half.
func (Store) PublicKey(loc hsm.Location) (crypto.PublicKey, error) {
	k, err := loadKeyPair(loc)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}

// SignECDSA signs a caller-computed digest; the answer is DER.
func (Store) SignECDSA(loc hsm.Location, digest []byte) ([]byte, error) {
	k, err := loadKeyPair(loc)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("ECDSA with a non-EC key: %w", hsm.ErrInvalid)
	}
	return ecdsa.SignASN1(rand.Reader, ec, digest)
}

// RSAPrivate applies the private-key operation.
func (Store) RSAPrivate(loc hsm.Location, padding hsm.RSAPadding, in []byte) ([]byte, error) {
	k, err := loadKeyPair(loc)
	if err != nil {
		return nil, err
	}
	r, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("RSA operation with a non-RSA key: %w", hsm.ErrInvalid)
	}
	return hsm.RSAPrivateOp(r, padding, in)
}

// Move renames the key file, overwriting the destination.
func (Store) Move(from, to hsm.Location) error {
	if _, err := os.Stat(from.Path); err != nil {
		return fmt.Errorf("move source %s: %w", from, hsm.ErrNotFound)
	}
	if err := atomicfile.MkdirAll(filepath.Dir(to.Path), 0o700); err != nil {
		return err
	}
	return atomicfile.Rename(from.Path, to.Path)
}
