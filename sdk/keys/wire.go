package keys

// Wire types of keyd's API (api-keys.md §5). The service decodes the same types; fields
// tagged required:"true" must be present (422 `missing field` otherwise).

// CreateKeyRequest is the body of POST /key.
type CreateKeyRequest struct {
	KeyID    *string `json:"keyId" required:"true"`
	Usage    *string `json:"usage" required:"true"`
	KeyBytes []byte  `json:"keyBytes,omitempty"`
}

// CreateKeyPairRequest is the body of POST /keypair.
type CreateKeyPairRequest struct {
	KeyID               *string `json:"keyId" required:"true"`
	PreferredAlgorithms *string `json:"preferredAlgorithms,omitempty"`
}

// MoveKeyPairRequest is the body of POST /keypair/{keyId}.
type MoveKeyPairRequest struct {
	From *string `json:"from" required:"true"`
}

// HandleRequest is the body of the routes that take only a handle.
type HandleRequest struct {
	KeyHandle *string `json:"keyHandle" required:"true"`
}

// DeriveKeyRequest is the body of POST /derivedkey.
type DeriveKeyRequest struct {
	BaseKeyHandle  *string `json:"baseKeyHandle" required:"true"`
	DerivationData []byte  `json:"derivationData" required:"true"`
}

// SignRequest is the body of POST /sign.
type SignRequest struct {
	KeyHandle  *string         `json:"keyHandle" required:"true"`
	Algorithm  *string         `json:"algorithm" required:"true"`
	Parameters *SignParameters `json:"parameters" required:"true"`
}

// SignParameters holds the message (HMAC-SHA256) or the digest (ECDSA).
type SignParameters struct {
	Message []byte `json:"message,omitempty"`
	Digest  []byte `json:"digest,omitempty"`
}

// EncryptRequest is the body of POST /encrypt.
type EncryptRequest struct {
	KeyHandle  *string         `json:"keyHandle" required:"true"`
	Algorithm  *string         `json:"algorithm" required:"true"`
	Parameters *AEADParameters `json:"parameters,omitempty"`
	Plaintext  []byte          `json:"plaintext" required:"true"`
}

// DecryptRequest is the body of POST /decrypt.
type DecryptRequest struct {
	KeyHandle  *string         `json:"keyHandle" required:"true"`
	Algorithm  *string         `json:"algorithm" required:"true"`
	Parameters *AEADParameters `json:"parameters,omitempty"`
	Ciphertext []byte          `json:"ciphertext" required:"true"`
}

// AEADParameters are the IV and additional data of AEAD.
type AEADParameters struct {
	IV  []byte `json:"iv" required:"true"`
	AAD []byte `json:"aad" required:"true"`
}

// Answers.
type (
	KeyHandleResponse struct {
		KeyHandle string `json:"keyHandle"`
	}
	ParameterResponse struct {
		Value string `json:"value"`
	}
	ExportResponse struct {
		Key []byte `json:"key"`
	}
	SignResponse struct {
		Signature []byte `json:"signature"`
	}
	EncryptResponse struct {
		Ciphertext []byte `json:"ciphertext"`
	}
	DecryptResponse struct {
		Plaintext []byte `json:"plaintext"`
	}
)

// Algorithm names on the wire.
const (
	AlgHMACSHA256   = "HMAC-SHA256"
	AlgECDSA        = "ECDSA"
	AlgAEAD         = "AEAD"
	AlgRSAPKCS1     = "RSA-PKCS1"
	AlgRSANoPadding = "RSA-NO-PADDING"
)

// APIVersion is the newest keyd api-version; the services call keyd with it.
const APIVersion = "2021-05-01"
