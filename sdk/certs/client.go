// Package certs is the Go client of certd's API. It imports only the standard library.
package certs

import (
	"context"

	"github.com/iotbroker/aziot/sdk/internal/transport"
)

// DefaultSocket is where the packaged certd listens.
const DefaultSocket = "/run/aziot/certd.sock"

// APIError is an error answer of certd (status and upstream message).
type APIError = transport.APIError

// Client talks to certd.
type Client struct{ t *transport.Client }

// New returns a client for the certd socket (a path or unix:// URI).
func New(endpoint string) *Client {
	return &Client{t: transport.New(endpoint, "certd.sock", APIVersion, 0)}
}

// Close drops idle connections.
func (c *Client) Close() { c.t.Close() }

// Create asks certd to issue a certificate for certID from a PEM CSR. With issuer nil,
// certd uses [cert_issuance.<certID>]; otherwise issuerCert and issuerKeyHandle sign it.
func (c *Client) Create(ctx context.Context, certID, csrPEM string, issuer *IssuerRef) (string, error) {
	req := CreateCertRequest{CertID: &certID, CSR: &csrPEM}
	if issuer != nil {
		req.Issuer = &Issuer{CertID: &issuer.CertID, PrivateKeyHandle: &issuer.KeyHandle}
	}
	var out CertResponse
	// Once: issuance is not idempotent (each call signs a new certificate), so a request
	// dropped unanswered, which certd may have served before a crash, is not repeated.
	err := c.t.DoOnce(ctx, "POST", "/certificates", req, &out)
	return out.PEM, err
}

// IssuerRef names an issuer certificate and the handle of its private key.
type IssuerRef struct {
	CertID    string
	KeyHandle string
}

// Get returns the PEM of certID.
func (c *Client) Get(ctx context.Context, certID string) (string, error) {
	var out CertResponse
	err := c.t.Do(ctx, "GET", "/certificates/"+transport.PathEscape(certID), nil, &out)
	return out.PEM, err
}

// Import stores pem under certID as is.
func (c *Client) Import(ctx context.Context, certID, pem string) (string, error) {
	var out CertResponse
	err := c.t.Do(ctx, "PUT", "/certificates/"+transport.PathEscape(certID), ImportCertRequest{PEM: &pem}, &out)
	return out.PEM, err
}

// Delete removes certID; a missing certificate is not an error.
func (c *Client) Delete(ctx context.Context, certID string) error {
	return c.t.Do(ctx, "DELETE", "/certificates/"+transport.PathEscape(certID), nil, nil)
}
