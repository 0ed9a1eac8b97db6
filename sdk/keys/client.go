// Package keys is the Go client of keyd's API, for host processes and for the other
// services alike. It imports only the standard library.
package keys

import (
	"context"

	"github.com/iotbroker/aziot/sdk/internal/transport"
)

// DefaultSocket is where the packaged keyd listens.
const DefaultSocket = "/run/aziot/keyd.sock"

// APIError is an error answer of keyd (status and upstream message).
type APIError = transport.APIError

// Client talks to keyd.
type Client struct{ t *transport.Client }

// New returns a client for the keyd socket (a path or unix:// URI). It opens at most a
// few connections at once and keeps at most two idle, briefly: keyd counts a user's
// connections against max_requests (default 10), and several clients of one user share
// that limit.
func New(endpoint string) *Client { return NewWithConns(endpoint, 0) }

// NewWithConns bounds the connections the client opens at once (0: the default, 4);
// keep the sum over a user's clients at or below the service's max_requests.
func NewWithConns(endpoint string, maxConns int) *Client {
	return &Client{t: transport.New(endpoint, "keyd.sock", APIVersion, maxConns)}
}

// Close drops idle connections.
func (c *Client) Close() { c.t.Close() }

func (c *Client) handle(ctx context.Context, method, path string, in any) (string, error) {
	var out KeyHandleResponse
	if err := c.t.Do(ctx, method, path, in, &out); err != nil {
		return "", err
	}
	return out.KeyHandle, nil
}

// CreateKey generates symmetric key id unless it exists. usage is e.g. "derive,sign".
func (c *Client) CreateKey(ctx context.Context, id, usage string) (string, error) {
	return c.handle(ctx, "POST", "/key", CreateKeyRequest{KeyID: &id, Usage: &usage})
}

// ImportKey stores key under id, overwriting any existing key.
func (c *Client) ImportKey(ctx context.Context, id string, key []byte, usage string) (string, error) {
	return c.handle(ctx, "POST", "/key", CreateKeyRequest{KeyID: &id, Usage: &usage, KeyBytes: key})
}

// LoadKey returns a handle for existing symmetric key id.
func (c *Client) LoadKey(ctx context.Context, id string) (string, error) {
	return c.handle(ctx, "GET", "/key/"+transport.PathEscape(id), nil)
}

// DeleteKey deletes the symmetric key of a handle.
func (c *Client) DeleteKey(ctx context.Context, handle string) error {
	return c.t.Do(ctx, "DELETE", "/key", HandleRequest{KeyHandle: &handle}, nil)
}

// CreateKeyPair generates key pair id unless it exists; preferred is e.g. "ec-p256:*"
// ("" for keyd's default).
func (c *Client) CreateKeyPair(ctx context.Context, id, preferred string) (string, error) {
	req := CreateKeyPairRequest{KeyID: &id}
	if preferred != "" {
		req.PreferredAlgorithms = &preferred
	}
	return c.handle(ctx, "POST", "/keypair", req)
}

// LoadKeyPair returns a handle for existing key pair id.
func (c *Client) LoadKeyPair(ctx context.Context, id string) (string, error) {
	return c.handle(ctx, "GET", "/keypair/"+transport.PathEscape(id), nil)
}

// DeleteKeyPair deletes the key pair of a handle.
func (c *Client) DeleteKeyPair(ctx context.Context, handle string) error {
	return c.t.Do(ctx, "DELETE", "/keypair", HandleRequest{KeyHandle: &handle}, nil)
}

// MoveKeyPair renames key pair from to to, replacing to.
func (c *Client) MoveKeyPair(ctx context.Context, from, to string) error {
	// Once: repeated after a success the move would fail, the source being gone.
	return c.t.DoOnce(ctx, "POST", "/keypair/"+transport.PathEscape(to), MoveKeyPairRequest{From: &from}, nil)
}

// Parameter returns a public parameter of a key pair: algorithm, ec-curve-oid, ec-point,
// rsa-modulus or rsa-exponent.
func (c *Client) Parameter(ctx context.Context, handle, name string) (string, error) {
	var out ParameterResponse
	err := c.t.Do(ctx, "POST", "/parameters/"+transport.PathEscape(name), HandleRequest{KeyHandle: &handle}, &out)
	return out.Value, err
}

// DeriveKey returns a handle for HMAC-SHA256(base, data); nothing is stored.
func (c *Client) DeriveKey(ctx context.Context, base string, data []byte) (string, error) {
	if data == nil {
		data = []byte{}
	}
	return c.handle(ctx, "POST", "/derivedkey", DeriveKeyRequest{BaseKeyHandle: &base, DerivationData: data})
}

// ExportDerivedKey returns the bytes of a derived key.
func (c *Client) ExportDerivedKey(ctx context.Context, handle string) ([]byte, error) {
	var out ExportResponse
	err := c.t.Do(ctx, "POST", "/derivedkey/export", HandleRequest{KeyHandle: &handle}, &out)
	return out.Key, err
}

// SignHMAC returns HMAC-SHA256 of message with a symmetric or derived key.
func (c *Client) SignHMAC(ctx context.Context, handle string, message []byte) ([]byte, error) {
	alg := AlgHMACSHA256
	if message == nil {
		message = []byte{}
	}
	var out SignResponse
	err := c.t.Do(ctx, "POST", "/sign", SignRequest{KeyHandle: &handle, Algorithm: &alg, Parameters: &SignParameters{Message: message}}, &out)
	return out.Signature, err
}

// SignECDSA signs a digest with an EC key pair; the answer is DER.
func (c *Client) SignECDSA(ctx context.Context, handle string, digest []byte) ([]byte, error) {
	alg := AlgECDSA
	var out SignResponse
	err := c.t.Do(ctx, "POST", "/sign", SignRequest{KeyHandle: &handle, Algorithm: &alg, Parameters: &SignParameters{Digest: digest}}, &out)
	return out.Signature, err
}

// EncryptAEAD encrypts with a symmetric or derived key (versioned ciphertext).
func (c *Client) EncryptAEAD(ctx context.Context, handle string, iv, aad, plaintext []byte) ([]byte, error) {
	alg := AlgAEAD
	var out EncryptResponse
	err := c.t.Do(ctx, "POST", "/encrypt", EncryptRequest{KeyHandle: &handle, Algorithm: &alg, Parameters: &AEADParameters{IV: nonNil(iv), AAD: nonNil(aad)}, Plaintext: nonNil(plaintext)}, &out)
	return out.Ciphertext, err
}

// DecryptAEAD decrypts a versioned ciphertext.
func (c *Client) DecryptAEAD(ctx context.Context, handle string, iv, aad, ciphertext []byte) ([]byte, error) {
	alg := AlgAEAD
	var out DecryptResponse
	err := c.t.Do(ctx, "POST", "/decrypt", DecryptRequest{KeyHandle: &handle, Algorithm: &alg, Parameters: &AEADParameters{IV: nonNil(iv), AAD: nonNil(aad)}, Ciphertext: nonNil(ciphertext)}, &out)
	return out.Plaintext, err
}

// RSAPrivate applies the RSA private-key operation ("RSA encrypt"): algorithm is
// AlgRSAPKCS1 or AlgRSANoPadding.
func (c *Client) RSAPrivate(ctx context.Context, handle, algorithm string, in []byte) ([]byte, error) {
	var out EncryptResponse
	err := c.t.Do(ctx, "POST", "/encrypt", EncryptRequest{KeyHandle: &handle, Algorithm: &algorithm, Plaintext: nonNil(in)}, &out)
	return out.Ciphertext, err
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
