package certs

// Wire types of certd's API (api-certs.md §4), shared with the service.

// CreateCertRequest is the body of POST /certificates.
type CreateCertRequest struct {
	CertID *string `json:"certId" required:"true"`
	CSR    *string `json:"csr" required:"true"`
	Issuer *Issuer `json:"issuer,omitempty"`
}

// Issuer names the certificate and key that sign a certificate.
type Issuer struct {
	CertID           *string `json:"certId" required:"true"`
	PrivateKeyHandle *string `json:"privateKeyHandle" required:"true"`
}

// ImportCertRequest is the body of PUT /certificates/{certId}.
type ImportCertRequest struct {
	PEM *string `json:"pem" required:"true"`
}

// CertResponse is every successful answer with a body: the PEM text.
type CertResponse struct {
	PEM string `json:"pem"`
}

// APIVersion is certd's only api-version.
const APIVersion = "2020-09-01"
