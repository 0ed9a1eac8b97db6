// Package hsm stores and uses keys behind one interface, resolving where each key ID
// lives as upstream's libaziot-keys does (api-keys.md §4): a preloaded URI, else the
// PKCS#11 base slot, else a file in the homedir. Backends (hsm/file, hsm/pkcs11) do the
// storage and the crypto; key bytes never leave this package except as derived keys.
package hsm

import (
	"crypto"
	"errors"
	"fmt"
	"strings"
)

// Usage is the set of uses requested for a symmetric key. Files ignore it; PKCS#11 uses it
// to pick the object type.
type Usage uint8

const (
	UsageDerive Usage = 1 << iota
	UsageEncrypt
	UsageSign
)

// ParseUsage reads upstream's comma-separated usage list (no spaces, not empty).
func ParseUsage(s string) (Usage, error) {
	if s == "" {
		return 0, errors.New("empty usage")
	}
	var u Usage
	for _, part := range strings.Split(s, ",") {
		switch part {
		case "derive":
			u |= UsageDerive
		case "encrypt":
			u |= UsageEncrypt
		case "sign":
			u |= UsageSign
		default:
			return 0, fmt.Errorf("unknown usage %q", part)
		}
	}
	return u, nil
}

// Algorithm is a key-pair algorithm keyd can generate.
type Algorithm string

const (
	ECP256  Algorithm = "ec-p256"
	RSA2048 Algorithm = "rsa-2048"
	RSA4096 Algorithm = "rsa-4096"
)

// ParsePreferredAlgorithms reads a colon-separated preference list: unknown components are
// ignored, `*` means ec-p256 then rsa-2048, duplicates collapse (api-keys.md §5.4).
func ParsePreferredAlgorithms(s string) []Algorithm {
	var out []Algorithm
	add := func(a Algorithm) {
		for _, x := range out {
			if x == a {
				return
			}
		}
		out = append(out, a)
	}
	for _, part := range strings.Split(s, ":") {
		switch part {
		case "ec-p256":
			add(ECP256)
		case "rsa-2048":
			add(RSA2048)
		case "rsa-4096":
			add(RSA4096)
		case "*":
			add(ECP256)
			add(RSA2048)
		}
	}
	return out
}

// RSAPadding selects the private-key operation of "RSA encrypt".
type RSAPadding int

const (
	// RSAPKCS1 applies PKCS#1 v1.5 type-1 padding to the input (the RSA sign primitive).
	RSAPKCS1 RSAPadding = iota
	// RSANoPadding is the raw private-key operation on a modulus-sized input.
	RSANoPadding
)

// Errors a backend returns; keyd maps ErrNotFound and ErrInvalid to 400, the rest to 500.
var (
	ErrNotFound = errors.New("key not found")
	ErrInvalid  = errors.New("invalid key or input")
	// ErrUnsupported means the backend cannot hold or do this; the keystore may fall back.
	ErrUnsupported = errors.New("not supported by this key store")
)

// Location is where a key lives: a file path or a pkcs11: URI.
type Location struct {
	Path string // file store
	URI  string // PKCS#11 object URI
}

func (l Location) String() string {
	if l.URI != "" {
		return redactPIN(l.URI)
	}
	return "file://" + l.Path
}

// redactPIN keeps PINs out of logs and errors.
func redactPIN(uri string) string {
	i := strings.Index(uri, "pin-value=")
	if i < 0 {
		return uri
	}
	j := strings.IndexAny(uri[i:], "&;")
	if j < 0 {
		return uri[:i] + "pin-value=REDACTED"
	}
	return uri[:i] + "pin-value=REDACTED" + uri[i+j:]
}

// Backend stores keys of one kind of location.
type Backend interface {
	// Symmetric keys.
	GenerateKey(loc Location, usage Usage) error // keeps an existing key
	ImportKey(loc Location, key []byte, usage Usage) error
	HasKey(loc Location) (bool, error)
	DeleteKey(loc Location) error
	HMAC(loc Location, msg []byte) ([]byte, error)
	// AEADEncrypt returns upstream's versioned ciphertext (version byte 2).
	AEADEncrypt(loc Location, iv, aad, plaintext []byte) ([]byte, error)
	AEADDecrypt(loc Location, iv, aad, ciphertext []byte) ([]byte, error)

	// Key pairs.
	GenerateKeyPair(loc Location, algs []Algorithm) error // keeps an existing key pair
	HasKeyPair(loc Location) (bool, error)
	DeleteKeyPair(loc Location) error
	PublicKey(loc Location) (crypto.PublicKey, error)
	SignECDSA(loc Location, digest []byte) ([]byte, error) // DER
	RSAPrivate(loc Location, padding RSAPadding, in []byte) ([]byte, error)
	Move(from, to Location) error
}

// AbsenceReporter is a Backend whose key operations fail with an error matching
// ErrNotFound exactly when HasKey (for symmetric-key operations) or HasKeyPair (for
// key-pair operations) would answer false, and for no other reason. The keystore then
// tries the operation itself at such a location instead of asking first: the file store
// would otherwise read the key file twice per operation.
type AbsenceReporter interface {
	Backend
	ReportsAbsence()
}
