// Package pkcs11 is keyd's key store in a PKCS#11 token (SoftHSM2, an HSM, or a TPM
// through tpm2-pkcs11), over github.com/miekg/pkcs11. Keys are generated inside the
// token as sensitive, non-extractable objects and found again by label, as upstream's
// libaziot-keys does (api-keys.md §4). Sessions are pooled per token and shared by
// concurrent requests; a token or library that fails is reloaded on the next request.
package pkcs11

import (
	"fmt"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/hsm/pkcs11/p11uri"
)

// Backend implements hsm.Backend for locations that are pkcs11: URIs.
type Backend struct {
	lib *library
}

var _ hsm.Backend = (*Backend)(nil)

// New returns a backend over the PKCS#11 library at libPath. The library is loaded on
// first use, not here: a missing or broken library fails the requests for PKCS#11 keys
// with a clear error while file keys keep working, and is tried again later.
func New(libPath string, opts Options) *Backend {
	return &Backend{lib: openLibrary(libPath, opts)}
}

// LibPath is the library this backend loads.
func (b *Backend) LibPath() string { return b.lib.path }

// Stats returns the session accounting of the token uri names (for leak checks).
func (b *Backend) Stats(uri string) (Stats, error) {
	u, err := p11uri.Parse(uri)
	if err != nil {
		return Stats{}, err
	}
	return b.lib.stats(u)
}

// Reset finalizes the library and drops every pool; the next request loads it again.
func (b *Backend) Reset() {
	b.lib.mu.Lock()
	defer b.lib.mu.Unlock()
	b.lib.unload()
	b.lib.loaded = b.lib.loaded.AddDate(-1, 0, 0) // allow an immediate reload
}

// do parses loc and runs fn on a session of its token; errors name the location, with
// the PIN redacted.
func (b *Backend) do(loc hsm.Location, what string, fn func(*conn, *p11uri.URI) error) error {
	u, err := p11uri.Parse(loc.URI)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", what, err, hsm.ErrInvalid)
	}
	if err := b.lib.with(u, func(c *conn) error { return fn(c, u) }); err != nil {
		return fmt.Errorf("%s at %s (library %s): %w", what, u, b.lib.path, err)
	}
	return nil
}
