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

// Store implements hsm.Backend over files. It keeps the keys it read, and the key pairs
// it parsed, for as long as one stat per use finds the file unchanged (docs/RATIONALE.md):
// upstream reads and parses the file on every request.
type Store struct {
	c *cache // nil: the process-wide cache
}

var _ hsm.AbsenceReporter = Store{}

// New returns a Store with its own cache of at most maxEntries key files.
func New(maxEntries int) Store { return Store{c: newCache(maxEntries)} }

func (s Store) cache() *cache {
	if s.c == nil {
		return defaultCache
	}
	return s.c
}

// ReportsAbsence declares that the operations below answer hsm.ErrNotFound exactly when
// HasKey or HasKeyPair would answer false, so the keystore need not ask first.
func (Store) ReportsAbsence() {}

// read reads the file without the cache (only to settle a race between creators).
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

func (s Store) write(loc hsm.Location, b []byte) error {
	defer s.cache().invalidate(loc.Path)
	// Upstream creates the keys directory on demand.
	if err := atomicfile.MkdirAll(filepath.Dir(loc.Path), 0o700); err != nil {
		return fmt.Errorf("create key directory for %s: %w", loc, err)
	}
	return atomicfile.Write(loc.Path, b, 0o600)
}

func (s Store) remove(loc hsm.Location) error {
	defer s.cache().invalidate(loc.Path)
	return atomicfile.Remove(loc.Path)
}

// create writes a generated key where none was (existed false) or where an unusable one
// is (existed true). A key that appears meanwhile — another request creating the same
// ID — is kept if usable, so that concurrent creates agree on one key (the handle
// validation key above all: a second one would void the handles signed with the first).
func (s Store) create(loc hsm.Location, b []byte, existed bool, usable func([]byte) bool) error {
	if existed {
		return s.write(loc, b)
	}
	defer s.cache().invalidate(loc.Path)
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
	return s.write(loc, b)
}

// GenerateKey writes 32 random bytes unless a non-empty key is there.
func (s Store) GenerateKey(loc hsm.Location, _ hsm.Usage) error {
	e, err := s.cache().load(loc)
	if err != nil {
		return err
	}
	if e != nil && len(e.raw) > 0 {
		return nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	return s.create(loc, key, e != nil, func(cur []byte) bool { return len(cur) > 0 })
}

// ImportKey overwrites the key with the given bytes.
func (s Store) ImportKey(loc hsm.Location, key []byte, _ hsm.Usage) error {
	if len(key) == 0 {
		return fmt.Errorf("empty key: %w", hsm.ErrInvalid)
	}
	return s.write(loc, key)
}

// loadKey returns the key bytes, shared with the cache: callers only read them.
func (s Store) loadKey(loc hsm.Location) ([]byte, error) {
	e, err := s.keyEntry(loc)
	if err != nil {
		return nil, err
	}
	return e.raw, nil
}

func (s Store) keyEntry(loc hsm.Location) (*entry, error) {
	e, err := s.cache().load(loc)
	if err != nil {
		return nil, err
	}
	if e == nil || len(e.raw) == 0 {
		// Missing, or empty: upstream treats an empty file as an error on load.
		return nil, fmt.Errorf("key at %s: %w", loc, hsm.ErrNotFound)
	}
	return e, nil
}

// HasKey reports whether a non-empty key file exists.
func (s Store) HasKey(loc hsm.Location) (bool, error) {
	e, err := s.cache().load(loc)
	return e != nil && len(e.raw) > 0, err
}

// DeleteKey removes the file; a missing one is fine.
func (s Store) DeleteKey(loc hsm.Location) error { return s.remove(loc) }

// HMAC is HMAC-SHA256 with the stored key.
func (s Store) HMAC(loc hsm.Location, msg []byte) ([]byte, error) {
	e, err := s.keyEntry(loc)
	if err != nil {
		return nil, err
	}
	return e.hmac(msg), nil
}

// AEADEncrypt seals with AES-256-GCM (version 2).
func (s Store) AEADEncrypt(loc hsm.Location, iv, aad, pt []byte) ([]byte, error) {
	key, err := s.loadKey(loc)
	if err != nil {
		return nil, err
	}
	return hsm.SealV2(key, iv, aad, pt)
}

// AEADDecrypt opens version 1 and 2 ciphertexts.
func (s Store) AEADDecrypt(loc hsm.Location, iv, aad, ct []byte) ([]byte, error) {
	key, err := s.loadKey(loc)
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

// loadKeyPair returns the parsed key pair. A file that does not parse holds no key pair
// (HasKeyPair answers false), so it is hsm.ErrNotFound, as a missing one.
func (s Store) loadKeyPair(loc hsm.Location) (crypto.Signer, error) {
	e, err := s.cache().load(loc)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, fmt.Errorf("key pair at %s: %w", loc, hsm.ErrNotFound)
	}
	k, err := e.keyPair()
	if err != nil {
		return nil, fmt.Errorf("key pair at %s: %v: %w", loc, err, hsm.ErrNotFound)
	}
	return k, nil
}

// GenerateKeyPair keeps a parsable key pair, else generates with the first algorithm only
// (upstream's file store does not try the others).
func (s Store) GenerateKeyPair(loc hsm.Location, algs []hsm.Algorithm) error {
	e, err := s.cache().load(loc)
	if err != nil {
		return err
	}
	if e != nil {
		if _, err := e.keyPair(); err == nil {
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
	return s.create(loc, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), e != nil, func(cur []byte) bool {
		_, err := parsePrivateKey(cur)
		return err == nil
	})
}

// HasKeyPair reports whether a parsable key pair is stored.
func (s Store) HasKeyPair(loc hsm.Location) (bool, error) {
	e, err := s.cache().load(loc)
	if err != nil || e == nil {
		return false, err
	}
	_, perr := e.keyPair()
	return perr == nil, nil
}

// DeleteKeyPair removes the file.
func (s Store) DeleteKeyPair(loc hsm.Location) error { return s.remove(loc) }

// PublicKey returns the public half of the stored key.
func (s Store) PublicKey(loc hsm.Location) (crypto.PublicKey, error) {
	k, err := s.loadKeyPair(loc)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}

// SignECDSA signs a caller-computed digest; the answer is DER.
func (s Store) SignECDSA(loc hsm.Location, digest []byte) ([]byte, error) {
	k, err := s.loadKeyPair(loc)
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
func (s Store) RSAPrivate(loc hsm.Location, padding hsm.RSAPadding, in []byte) ([]byte, error) {
	k, err := s.loadKeyPair(loc)
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
func (s Store) Move(from, to hsm.Location) error {
	defer s.cache().invalidate(from.Path)
	defer s.cache().invalidate(to.Path)
	if _, err := os.Stat(from.Path); err != nil {
		return fmt.Errorf("move source %s: %w", from, hsm.ErrNotFound)
	}
	if err := atomicfile.MkdirAll(filepath.Dir(to.Path), 0o700); err != nil {
		return err
	}
	return atomicfile.Rename(from.Path, to.Path)
}
