package hsm

import (
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"

	"github.com/iotbroker/aziot/hsm/pkcs11/p11uri"
)

// Config is keyd's [aziot_keys] and [preloaded_keys].
type Config struct {
	HomedirPath    string
	PKCS11LibPath  string
	PKCS11BaseSlot string
	// Preloaded maps key IDs to file:// or pkcs11: URIs.
	Preloaded map[string]string
}

// Keystore resolves key IDs to locations and dispatches to the backends.
type Keystore struct {
	cfg    Config
	file   Backend
	pkcs11 Backend // nil unless a PKCS#11 library is configured

	// locs memoizes locations: they depend only on cfg, and computing them (upstream's
	// SHA-256 file name, the PKCS#11 URI) was a tenth of keyd's time per sign.
	locMu sync.RWMutex
	locs  map[string][]Location
}

// maxMemoLocations bounds the memo: IDs come from callers, so it starts over when full.
const maxMemoLocations = 4096

// NewKeystore validates cfg (an invalid preloaded URI or base slot is fatal, as
// upstream) and returns a keystore over the given backends.
func NewKeystore(cfg Config, file, pkcs11 Backend) (*Keystore, error) {
	for id, uri := range cfg.Preloaded {
		if _, err := parseLocationURI(uri); err != nil {
			return nil, fmt.Errorf("preloaded key %q: %w", id, err)
		}
	}
	if cfg.PKCS11BaseSlot != "" {
		if _, err := p11uri.Parse(cfg.PKCS11BaseSlot); err != nil {
			return nil, fmt.Errorf("pkcs11_base_slot %s: %w", redactPIN(cfg.PKCS11BaseSlot), err)
		}
	}
	return &Keystore{cfg: cfg, file: file, pkcs11: pkcs11}, nil
}

func parseLocationURI(uri string) (Location, error) {
	switch {
	case strings.HasPrefix(uri, "file://"):
		u, err := url.Parse(uri)
		if err != nil || u.Path == "" || !filepath.IsAbs(u.Path) {
			return Location{}, fmt.Errorf("invalid file URI %q", uri)
		}
		return Location{Path: u.Path}, nil
	case strings.HasPrefix(uri, "pkcs11:"):
		if _, err := p11uri.Parse(uri); err != nil {
			return Location{}, fmt.Errorf("invalid PKCS#11 URI %s: %w", redactPIN(uri), err)
		}
		return Location{URI: uri}, nil
	}
	return Location{}, fmt.Errorf("unsupported key URI scheme in %q", redactPIN(uri))
}

// FileName is upstream's file name for an ID: its ASCII alphanumerics, a dash, and the
// hex SHA-256 of the ID.
func FileName(id, ext string) string {
	var b strings.Builder
	for _, r := range id {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	sum := sha256.Sum256([]byte(id))
	return b.String() + "-" + hex.EncodeToString(sum[:]) + ext
}

// locations lists where id may live, in upstream's order. The slice is shared: callers
// must not modify it.
func (k *Keystore) locations(id string) ([]Location, error) {
	k.locMu.RLock()
	locs, ok := k.locs[id]
	k.locMu.RUnlock()
	if ok {
		return locs, nil
	}
	locs, err := k.computeLocations(id)
	if err != nil {
		return nil, err
	}
	k.locMu.Lock()
	if k.locs == nil || len(k.locs) >= maxMemoLocations {
		k.locs = make(map[string][]Location, 64)
	}
	k.locs[id] = locs
	k.locMu.Unlock()
	return locs, nil
}

func (k *Keystore) computeLocations(id string) ([]Location, error) {
	if uri, ok := k.cfg.Preloaded[id]; ok {
		loc, err := parseLocationURI(uri)
		if err != nil {
			return nil, err
		}
		if loc.URI != "" && k.pkcs11 == nil {
			return nil, errors.New("pre-loaded key requires PKCS#11 lib path to be configured")
		}
		return []Location{loc}, nil
	}
	var locs []Location
	if k.pkcs11 != nil && k.cfg.PKCS11BaseSlot != "" {
		// Keys by ID live in the base slot under their ID as label (upstream).
		base, err := p11uri.Parse(k.cfg.PKCS11BaseSlot)
		if err != nil {
			return nil, fmt.Errorf("pkcs11_base_slot %s: %w", redactPIN(k.cfg.PKCS11BaseSlot), err)
		}
		locs = append(locs, Location{URI: base.WithObject(id).Format()})
	}
	if k.cfg.HomedirPath != "" {
		locs = append(locs, Location{Path: filepath.Join(k.cfg.HomedirPath, "keys", FileName(id, ".key"))})
	}
	if len(locs) == 0 {
		return nil, errors.New("no way to create keys")
	}
	return locs, nil
}

func (k *Keystore) backend(loc Location) Backend {
	if loc.URI != "" {
		return k.pkcs11
	}
	return k.file
}

// CreateKey generates a symmetric key unless one exists at any location (upstream
// loads before it creates). Generation falls back to the next location only when the
// token cannot hold the key (ErrUnsupported: no such mechanism, or a failed AES-GCM
// self-test); any other failure, such as a wrong PIN, is the answer.
func (k *Keystore) CreateKey(id string, usage Usage) error {
	if _, err := k.findKey(id); err == nil || !errors.Is(err, ErrNotFound) {
		return err
	}
	locs, err := k.locations(id)
	if err != nil {
		return err
	}
	return k.createAt(locs, "create key", id, func(loc Location) error {
		return k.backend(loc).GenerateKey(loc, usage)
	})
}

// ImportKey stores key bytes under id, overwriting, with the same fallback as CreateKey
// (a token refuses, for instance, HMAC keys shorter than 32 bytes).
func (k *Keystore) ImportKey(id string, key []byte, usage Usage) error {
	locs, err := k.locations(id)
	if err != nil {
		return err
	}
	return k.createAt(locs, "import key", id, func(loc Location) error {
		return k.backend(loc).ImportKey(loc, key, usage)
	})
}

func (k *Keystore) createAt(locs []Location, what, id string, create func(Location) error) error {
	var lastErr error
	for _, loc := range locs {
		err := create(loc)
		if err == nil {
			return nil
		}
		lastErr = fmt.Errorf("%s %q at %s: %w", what, id, loc, err)
		if !errors.Is(err, ErrUnsupported) {
			return lastErr
		}
	}
	return lastErr
}

// findKey returns the first location holding symmetric key id.
func (k *Keystore) findKey(id string) (Location, error) {
	locs, err := k.locations(id)
	if err != nil {
		return Location{}, err
	}
	for _, loc := range locs {
		ok, err := k.backend(loc).HasKey(loc)
		if err != nil {
			return Location{}, fmt.Errorf("load key %q at %s: %w", id, loc, err)
		}
		if ok {
			return loc, nil
		}
	}
	return Location{}, fmt.Errorf("load key %q: %w", id, ErrNotFound)
}

// findKeyPair returns the first location holding key pair id.
func (k *Keystore) findKeyPair(id string) (Location, error) {
	locs, err := k.locations(id)
	if err != nil {
		return Location{}, err
	}
	for _, loc := range locs {
		ok, err := k.backend(loc).HasKeyPair(loc)
		if err != nil {
			return Location{}, fmt.Errorf("load key pair %q at %s: %w", id, loc, err)
		}
		if ok {
			return loc, nil
		}
	}
	return Location{}, fmt.Errorf("load key pair %q: %w", id, ErrNotFound)
}

// use runs op at the first location holding id (a key pair when pair is set), as
// findKey and findKeyPair would find it, asking an AbsenceReporter only once.
func use[T any](k *Keystore, id string, pair bool, op func(Backend, Location) (T, error)) (T, error) {
	var zero T
	what, has := "key", Backend.HasKey
	if pair {
		what, has = "key pair", Backend.HasKeyPair
	}
	locs, err := k.locations(id)
	if err != nil {
		return zero, err
	}
	for _, loc := range locs {
		b := k.backend(loc)
		if _, ok := b.(AbsenceReporter); ok {
			v, err := op(b, loc)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return v, err
		}
		ok, err := has(b, loc)
		if err != nil {
			return zero, fmt.Errorf("load %s %q at %s: %w", what, id, loc, err)
		}
		if ok {
			return op(b, loc)
		}
	}
	return zero, fmt.Errorf("load %s %q: %w", what, id, ErrNotFound)
}

// LoadKey checks that symmetric key id exists.
func (k *Keystore) LoadKey(id string) error {
	_, err := k.findKey(id)
	return err
}

// DeleteKey removes id from every location.
func (k *Keystore) DeleteKey(id string) error {
	locs, err := k.locations(id)
	if err != nil {
		return err
	}
	for _, loc := range locs {
		if err := k.backend(loc).DeleteKey(loc); err != nil {
			return fmt.Errorf("delete key %q at %s: %w", id, loc, err)
		}
	}
	return nil
}

// CreateKeyPair generates a key pair unless one exists, at the first location only.
func (k *Keystore) CreateKeyPair(id string, algs []Algorithm) error {
	if len(algs) == 0 {
		return fmt.Errorf("create key pair %q: no usable algorithm: %w", id, ErrInvalid)
	}
	locs, err := k.locations(id)
	if err != nil {
		return err
	}
	if err := k.backend(locs[0]).GenerateKeyPair(locs[0], algs); err != nil {
		return fmt.Errorf("create key pair %q at %s: %w", id, locs[0], err)
	}
	return nil
}

// LoadKeyPair checks that key pair id exists.
func (k *Keystore) LoadKeyPair(id string) error {
	_, err := k.findKeyPair(id)
	return err
}

// DeleteKeyPair removes id from every location.
func (k *Keystore) DeleteKeyPair(id string) error {
	locs, err := k.locations(id)
	if err != nil {
		return err
	}
	for _, loc := range locs {
		if err := k.backend(loc).DeleteKeyPair(loc); err != nil {
			return fmt.Errorf("delete key pair %q at %s: %w", id, loc, err)
		}
	}
	return nil
}

// MoveKeyPair renames from onto to (first location of each); mixed kinds are invalid.
func (k *Keystore) MoveKeyPair(from, to string) error {
	fl, err := k.locations(from)
	if err != nil {
		return err
	}
	tl, err := k.locations(to)
	if err != nil {
		return err
	}
	if (fl[0].URI == "") != (tl[0].URI == "") {
		return fmt.Errorf("move key pair %q to %q across stores: %w", from, to, ErrInvalid)
	}
	if err := k.backend(fl[0]).Move(fl[0], tl[0]); err != nil {
		return fmt.Errorf("move key pair %q to %q: %w", from, to, err)
	}
	return nil
}

// PublicKey returns the public half of key pair id.
func (k *Keystore) PublicKey(id string) (crypto.PublicKey, error) {
	return use(k, id, true, func(b Backend, loc Location) (crypto.PublicKey, error) {
		return b.PublicKey(loc)
	})
}

// HMAC signs msg with symmetric key id.
func (k *Keystore) HMAC(id string, msg []byte) ([]byte, error) {
	return use(k, id, false, func(b Backend, loc Location) ([]byte, error) {
		return b.HMAC(loc, msg)
	})
}

// AEADEncrypt encrypts with symmetric key id (version-2 ciphertext).
func (k *Keystore) AEADEncrypt(id string, iv, aad, plaintext []byte) ([]byte, error) {
	return use(k, id, false, func(b Backend, loc Location) ([]byte, error) {
		return b.AEADEncrypt(loc, iv, aad, plaintext)
	})
}

// AEADDecrypt decrypts a versioned ciphertext with symmetric key id.
func (k *Keystore) AEADDecrypt(id string, iv, aad, ciphertext []byte) ([]byte, error) {
	return use(k, id, false, func(b Backend, loc Location) ([]byte, error) {
		return b.AEADDecrypt(loc, iv, aad, ciphertext)
	})
}

// SignECDSA signs a digest with key pair id; the answer is DER.
func (k *Keystore) SignECDSA(id string, digest []byte) ([]byte, error) {
	return use(k, id, true, func(b Backend, loc Location) ([]byte, error) {
		return b.SignECDSA(loc, digest)
	})
}

// RSAPrivate applies the private-key operation of key pair id.
func (k *Keystore) RSAPrivate(id string, padding RSAPadding, in []byte) ([]byte, error) {
	return use(k, id, true, func(b Backend, loc Location) ([]byte, error) {
		return b.RSAPrivate(loc, padding, in)
	})
}
