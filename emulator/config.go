package emulator

import (
	"net"
	"time"
)

// Config configures an Emulator. The zero value is usable: one ID scope, one hub, one EST
// label, all on ephemeral loopback ports.
type Config struct {
	// Listener addresses ("host:port"; port 0 = ephemeral). DPSAddr and ESTAddr default
	// to 127.0.0.1:0; "off" disables the listener. AdminAddr empty = no admin listener.
	DPSAddr    string
	ESTAddr    string
	AdminAddr  string
	AdminToken string // bearer token for the admin listener (generated when empty)
	// ESTPlainAddr optionally serves EST over plain HTTP too, for the negative test of
	// clients that must refuse http:// URLs (cloud-est.md §1). Empty = off.
	ESTPlainAddr string

	IDScopes    []string // default {"0ne00000A0A"}
	Hubs        []HubConfig
	Enrollments []Enrollment
	ESTLabels   []ESTLabelConfig // default one unlabelled label with Basic estuser:estpass or client cert

	// Extra names and addresses put into every server certificate.
	DNSNames    []string
	IPAddresses []net.IP

	PKIDir   string // load the test PKI from here, or generate and save it here
	StateDir string // optional persistence of cloud state

	Clock             func() time.Time // base clock (default time.Now)
	Seed              uint64           // seeds IDs and generated keys (0 = random)
	FixedOperationIDs bool             // operation IDs 4.0000000000000001.<counter uuid>
	RetryAfter        int              // seconds in DPS Retry-After (default 3)
	OperationTTL      time.Duration    // poll after this → 404 (default 1h; unverified)
	DPSAPIVersions    []string         // allow-list (default cloud-dps.md §1.1)
	HubAPIVersions    []string         // allow-list (default cloud-hub.md §1)
	LogBodyCap        int              // bytes of bodies kept in the log (default 16 KiB)

	// CustomAllocator implements allocation policy "custom". Nil: the enrollment's
	// CustomHub (static table) or its first hub, echoing the request payload.
	CustomAllocator func(AllocationRequest) (AllocationResult, error)

	Switches Switches
}

// Switches select between behaviours where the real service is unverified (documented in
// docs/emulator.md). The zero value is the emulator's best reading of the real service.
type Switches struct {
	// DisabledEnrollment401: a disabled enrollment gets an immediate 401 on the PUT
	// instead of an operation that ends "disabled".
	DisabledEnrollment401 bool
	// HubDisabledDeviceNotFound: a disabled or deleted device gets 404 instead of 401.
	HubDisabledDeviceNotFound bool
	// ModuleCreateExistingOK: PUT without If-Match on an existing module updates it (200)
	// instead of 409 ModuleAlreadyExistsOnDevice.
	ModuleCreateExistingOK bool
	// ModuleUpdateAbsentNotFound: PUT with If-Match on an absent module gets 404
	// ModuleNotFound instead of 412 PreconditionFailed.
	ModuleUpdateAbsentNotFound bool
	// AllowCSRAnyAPIVersion: accept `csr` under api-versions older than 2025-07-01-preview.
	AllowCSRAnyAPIVersion bool
	// HubMissingAPIVersionOK: accept hub requests without api-version.
	HubMissingAPIVersionOK bool
}

// HubConfig describes one IoT hub.
type HubConfig struct {
	// Name is the canonical host name DPS returns as assignedHub. Empty: "localhost:<port>"
	// of the bound listener.
	Name    string   `toml:"name"`
	Aliases []string `toml:"aliases"`
	Addr    string   `toml:"addr"` // default 127.0.0.1:0
	// Policy keys for service-side tokens (skn); default iothubowner with a generated key.
	Policies map[string]string `toml:"policies"`
	// Unlinked: DPS may not assign devices here (allocation fails with 400208).
	Unlinked bool `toml:"unlinked"`
	// RefuseDevices: the hub refuses DPS's device creation (allocation fails with 400209).
	RefuseDevices bool `toml:"refuse_devices"`
	// CACertsPEM are CA certificates registered (verified) on the hub for
	// certificateAuthority devices.
	CACertsPEM []string `toml:"ca_certs"`
}

// ESTLabelConfig configures one EST CA label ("" = no label).
type ESTLabelConfig struct {
	Label string `toml:"label"`
	// Users for HTTP Basic (user → password).
	Users map[string]string `toml:"users"`
	// Auth policy: "basic", "cert", "basic_or_cert" (default), "basic_and_cert", "none".
	Policy string `toml:"policy"`
	// Validity of issued certificates (default 30 days).
	Validity time.Duration `toml:"validity"`
	// BootstrapAnyEnrollment lets a bootstrap client certificate enroll any CSR, not only
	// EST identity CSRs (those asking for clientAuth).
	BootstrapAnyEnrollment bool `toml:"bootstrap_any_enrollment"`
	// CACertsRequireAuth applies the policy to cacerts too (RFC 7030 recommends none).
	CACertsRequireAuth bool `toml:"cacerts_require_auth"`
	// CACertPath/CAKeyPath load the issuing CA; empty = an intermediate under the root.
	CACertPath string `toml:"ca_cert"`
	CAKeyPath  string `toml:"ca_key"`
}

// AllocationRequest is what a custom allocator sees.
type AllocationRequest struct {
	RegistrationID string
	Enrollment     Enrollment
	Payload        []byte // raw JSON payload of the register request (nil if absent)
	LinkedHubs     []string
}

// AllocationResult is a custom allocator's answer. Failure != "" fails the registration
// with ErrorCode (default 400207, "custom allocation failed").
type AllocationResult struct {
	Hub       string
	Payload   []byte // JSON returned as registrationState.payload (nil: omitted)
	Failure   string
	ErrorCode int
	DeviceID  string // overrides the enrollment's device ID when set
}

var defaultDPSAPIVersions = []string{"2019-03-31", "2021-06-01", "2021-10-01", "2025-07-01-preview", "2026-04-01", "2026-11-02-preview"}

var defaultHubAPIVersions = []string{"2017-11-08-preview", "2018-06-30", "2019-03-30", "2020-03-13", "2020-05-31-preview", "2020-09-30", "2021-04-12"}

func (c *Config) withDefaults() {
	if c.DPSAddr == "" {
		c.DPSAddr = "127.0.0.1:0"
	}
	if c.ESTAddr == "" {
		c.ESTAddr = "127.0.0.1:0"
	}
	if len(c.IDScopes) == 0 {
		c.IDScopes = []string{"0ne00000A0A"}
	}
	if len(c.Hubs) == 0 {
		c.Hubs = []HubConfig{{}}
	}
	if len(c.ESTLabels) == 0 {
		c.ESTLabels = []ESTLabelConfig{{Users: map[string]string{"estuser": "estpass"}}}
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = 3
	}
	if c.OperationTTL == 0 {
		c.OperationTTL = time.Hour
	}
	if len(c.DPSAPIVersions) == 0 {
		c.DPSAPIVersions = defaultDPSAPIVersions
	}
	if len(c.HubAPIVersions) == 0 {
		c.HubAPIVersions = defaultHubAPIVersions
	}
	if c.LogBodyCap == 0 {
		c.LogBodyCap = 16 << 10
	}
}
