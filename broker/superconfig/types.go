package superconfig

// Config is a parsed super-config (config.md §2). Optional values are pointers or nil
// maps; defaults are already applied where upstream applies them at parse time.
type Config struct {
	Hostname                  *string
	LocalGatewayHostname      *string // also accepted as parent_hostname
	CloudTimeoutSec           uint64  // ≥ 70, default 70
	CloudRetries              uint32  // default 1
	PreferModuleIdentityCache bool
	MaxRequests               *MaxRequests
	Provisioning              Provisioning
	LocalID                   *LocalID
	AziotKeys                 map[string]string
	PreloadedKeys             map[string]KeyLocation
	CertIssuance              CertIssuance
	PreloadedCerts            map[string]PreloadedCert
	TPM                       TPM
	// Broker is our own [broker] table (architecture.md §8), kept opaque and copied to
	// every service file; nil when absent.
	Broker map[string]any
}

// MaxRequests is [aziot_max_requests]; all four values are required when present.
type MaxRequests struct {
	Keyd, Certd, Identityd, Tpmd uint64
}

// Provisioning source values.
const (
	SourceManual = "manual"
	SourceDPS    = "dps"
	SourceNone   = "none"
)

type Provisioning struct {
	Source string

	// Manual. A connection string is split into the three fields and DeviceKey.
	FromConnectionString bool
	IothubHostname       string
	DeviceID             string
	ManualAuth           *ManualAuth

	// DPS.
	GlobalEndpoint string
	IDScope        string
	Attestation    *Attestation
	PayloadURI     *string
}

// Manual authentication and DPS attestation methods.
const (
	MethodSAS          = "sas"
	MethodX509         = "x509"
	MethodSymmetricKey = "symmetric_key"
	MethodTPM          = "tpm"
)

type ManualAuth struct {
	Method     string        // sas | x509
	DeviceIDPK *SymmetricKey // sas (or the key of a connection string)
	X509       *X509Identity // x509
}

type Attestation struct {
	Method         string // symmetric_key | x509 | tpm
	RegistrationID *string
	SymmetricKey   *SymmetricKey
	X509           *X509Identity
}

// SymmetricKey is either inline bytes or a key location.
type SymmetricKey struct {
	Value []byte
	URI   *KeyLocation
}

// X509Identity is a preloaded cert + key, or issuance options for a cert to be issued.
type X509Identity struct {
	Issued *IssuanceOptions
	Cert   string // preloaded: the cert's URL
	Key    KeyLocation
}

// Cert issuance methods.
const (
	IssueEST        = "est"
	IssueLocalCA    = "local_ca"
	IssueSelfSigned = "self_signed"
)

// IssuanceOptions are the options of an issued cert (config.md §2.3).
type IssuanceOptions struct {
	Method     string
	URL        *string  // est only
	Auth       *ESTAuth // est only
	ExpiryDays *uint32
	CommonName *string
	Subject    map[string]string
	AutoRenew  *AutoRenew
}

// ESTAuth is basic and/or X.509 client authentication to an EST server.
type ESTAuth struct {
	Basic *BasicAuth
	X509  *ESTAuthX509
}

type BasicAuth struct{ Username, Password string }

// ESTAuthX509 is either the bootstrap form (a bootstrap cert to obtain the EST
// identity cert) or the identity form (the EST identity cert already on the device).
type ESTAuthX509 struct {
	Bootstrap bool
	Cert      string
	Key       KeyLocation
}

// AutoRenew is a renewal policy; threshold and retry keep their canonical text.
type AutoRenew struct {
	RotateKey bool
	Threshold string
	Retry     string
}

// DefaultAutoRenew is certd's EST identity renewal default.
var DefaultAutoRenew = AutoRenew{RotateKey: true, Threshold: "80%", Retry: "4%"}

type CertIssuance struct {
	EST     *EST
	LocalCA *LocalCA
}

type EST struct {
	TrustedCerts      []string
	Auth              *ESTAuth
	IdentityAutoRenew AutoRenew
	URLs              map[string]string
}

// LocalCA is either issued (Issued set) or preloaded (Cert and Key).
type LocalCA struct {
	Issued *IssuanceOptions
	Cert   string
	Key    KeyLocation
}

// PreloadedCert is a file URL or a list of other cert IDs.
type PreloadedCert struct {
	URI string
	IDs []string
}

func (p PreloadedCert) value() any {
	if p.IDs != nil {
		return append([]string(nil), p.IDs...)
	}
	return p.URI
}

// TPM is the [tpm] table, written flattened into tpmd's config.
type TPM struct {
	TCTI            string // default "device"
	AuthKeyIndex    uint32 // default 0x100
	EndorsementAuth string
	OwnerAuth       string
}

type LocalID struct {
	Domain string
}
