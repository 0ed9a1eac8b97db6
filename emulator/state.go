package emulator

import (
	"encoding/json"
	"time"
)

// Attestation kinds of an enrollment.
const (
	AttestSymmetric = "symmetricKey"
	AttestX509      = "x509"
	AttestTPM       = "tpm"
)

// Allocation policies.
const (
	AllocStatic = "static"
	AllocHashed = "hashed"
	AllocCustom = "custom"
)

// Reprovision policies (what happens to device data when the assigned hub changes).
const (
	ReprovisionMigrate = "migrate"
	ReprovisionReset   = "reset"
	ReprovisionNever   = "never"
)

// Enrollment is one DPS individual enrollment or enrollment group. Certificates are PEM so
// the value survives persistence and TOML configuration unchanged.
type Enrollment struct {
	IDScope     string `json:"idScope,omitempty" toml:"id_scope"`
	Attestation string `json:"attestation" toml:"attestation"` // symmetricKey | x509 | tpm
	Group       bool   `json:"group,omitempty" toml:"group"`
	// ID is the registration ID (individual) or the group ID (group).
	ID string `json:"id" toml:"id"`

	PrimaryKey   string `json:"primaryKey,omitempty" toml:"primary_key"`
	SecondaryKey string `json:"secondaryKey,omitempty" toml:"secondary_key"`

	// Individual X.509: the device certificates (matched by SHA-256 thumbprint).
	PrimaryCertPEM   string `json:"primaryCert,omitempty" toml:"primary_cert"`
	SecondaryCertPEM string `json:"secondaryCert,omitempty" toml:"secondary_cert"`
	// Group X.509: the signing certificate (root or intermediate) and its verified flag.
	SigningCertPEM string `json:"signingCert,omitempty" toml:"signing_cert"`
	Unverified     bool   `json:"unverified,omitempty" toml:"unverified"`

	// TPM: base64 TPM2B_PUBLIC of the EK (with or without the size prefix).
	EndorsementKey string `json:"endorsementKey,omitempty" toml:"endorsement_key"`

	Disabled    bool     `json:"disabled,omitempty" toml:"disabled"`
	DeviceID    string   `json:"deviceId,omitempty" toml:"device_id"`
	IoTEdge     bool     `json:"iotEdge,omitempty" toml:"iot_edge"`
	Hubs        []string `json:"hubs,omitempty" toml:"hubs"`
	Allocation  string   `json:"allocation,omitempty" toml:"allocation"`
	Reprovision string   `json:"reprovision,omitempty" toml:"reprovision"`
	// IssueCerts makes a `csr` in the register body get a certificate from the DPS CA.
	IssueCerts bool `json:"issueCerts,omitempty" toml:"issue_certs"`
	// CustomHub is the static-table form of custom allocation: the hub to assign.
	CustomHub string `json:"customHub,omitempty" toml:"custom_hub"`
}

// Registration is DPS's record of a device's latest assignment.
type Registration struct {
	IDScope        string          `json:"idScope"`
	RegistrationID string          `json:"registrationId"`
	EnrollmentKey  string          `json:"enrollmentKey"`
	DeviceID       string          `json:"deviceId"`
	AssignedHub    string          `json:"assignedHub"`
	InitialHub     string          `json:"initialHub"`
	Substatus      string          `json:"substatus"`
	Created        time.Time       `json:"created"`
	Updated        time.Time       `json:"updated"`
	Etag           string          `json:"etag"`
	LastState      json.RawMessage `json:"lastState,omitempty"`
}

// SymmetricKey is the symmetricKey part of an AuthenticationMechanism.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// X509Thumbprint is the x509Thumbprint part of an AuthenticationMechanism.
type X509Thumbprint struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

// Authentication is IoT Hub's AuthenticationMechanism (cloud-hub.md §5.2).
type Authentication struct {
	SymmetricKey   *SymmetricKey   `json:"symmetricKey,omitempty"`
	X509Thumbprint *X509Thumbprint `json:"x509Thumbprint,omitempty"`
	Type           string          `json:"type"`
}

// Module is a module identity (cloud-hub.md §5.1).
type Module struct {
	ModuleID                   string          `json:"moduleId"`
	DeviceID                   string          `json:"deviceId"`
	ManagedBy                  *string         `json:"managedBy,omitempty"`
	GenerationID               string          `json:"generationId"`
	Etag                       string          `json:"etag"`
	ConnectionState            string          `json:"connectionState"`
	ConnectionStateUpdatedTime string          `json:"connectionStateUpdatedTime"`
	LastActivityTime           string          `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount"`
	Authentication             *Authentication `json:"authentication"`
	version                    int
}

// Device is a device identity (cloud-hub.md §5.3).
type Device struct {
	DeviceID                   string             `json:"deviceId"`
	GenerationID               string             `json:"generationId"`
	Etag                       string             `json:"etag"`
	ConnectionState            string             `json:"connectionState"`
	Status                     string             `json:"status"`
	StatusReason               *string            `json:"statusReason"`
	ConnectionStateUpdatedTime string             `json:"connectionStateUpdatedTime"`
	StatusUpdatedTime          string             `json:"statusUpdatedTime"`
	LastActivityTime           string             `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int                `json:"cloudToDeviceMessageCount"`
	Authentication             *Authentication    `json:"authentication"`
	Capabilities               map[string]bool    `json:"capabilities"`
	DeviceScope                string             `json:"deviceScope,omitempty"`
	ParentScopes               []string           `json:"parentScopes,omitempty"`
	Modules                    map[string]*Module `json:"-"`
	// Messages counts accepted telemetry (device route) for test assertions.
	Messages int `json:"-"`
	version  int
}

const zeroTime = "0001-01-01T00:00:00Z"

// hubState is the registry of one hub.
type hubState struct {
	cfg     HubConfig
	name    string // canonical name (resolved after binding when cfg.Name is empty)
	tls     *serverTLS
	devices map[string]*Device
	// moduleMessages counts module telemetry by "device/module".
	moduleMessages map[string]int
}
