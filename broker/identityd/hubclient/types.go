package hubclient

// Module is IoT Hub's module identity (cloud-hub.md §5.1). Unknown fields are ignored and
// every documented authentication type is accepted, so a module the identity service does
// not own (an Edge system module, an X.509 module) cannot make a list fail.
type Module struct {
	ModuleID                   string          `json:"moduleId"`
	DeviceID                   string          `json:"deviceId"`
	ManagedBy                  *string         `json:"managedBy,omitempty"`
	GenerationID               string          `json:"generationId,omitempty"`
	Etag                       string          `json:"etag,omitempty"`
	ConnectionState            string          `json:"connectionState,omitempty"`
	ConnectionStateUpdatedTime string          `json:"connectionStateUpdatedTime,omitempty"`
	LastActivityTime           string          `json:"lastActivityTime,omitempty"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount,omitempty"`
	Authentication             *Authentication `json:"authentication,omitempty"`
}

// Device is IoT Hub's device identity (cloud-hub.md §5.3).
type Device struct {
	DeviceID                   string          `json:"deviceId"`
	GenerationID               string          `json:"generationId,omitempty"`
	Etag                       string          `json:"etag,omitempty"`
	ConnectionState            string          `json:"connectionState,omitempty"`
	Status                     string          `json:"status,omitempty"`
	StatusReason               *string         `json:"statusReason,omitempty"`
	ConnectionStateUpdatedTime string          `json:"connectionStateUpdatedTime,omitempty"`
	StatusUpdatedTime          string          `json:"statusUpdatedTime,omitempty"`
	LastActivityTime           string          `json:"lastActivityTime,omitempty"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount,omitempty"`
	Authentication             *Authentication `json:"authentication,omitempty"`
	Capabilities               map[string]bool `json:"capabilities,omitempty"`
	DeviceScope                string          `json:"deviceScope,omitempty"`
	ParentScopes               []string        `json:"parentScopes,omitempty"`
}

// Authentication types (cloud-hub.md §5.2).
const (
	AuthSAS                  = "sas"
	AuthSelfSigned           = "selfSigned"
	AuthCertificateAuthority = "certificateAuthority"
	AuthNone                 = "none"
)

// Authentication is IoT Hub's AuthenticationMechanism. The field order is upstream's
// serialisation of the "set keys" body: symmetricKey, then type.
type Authentication struct {
	SymmetricKey   *SymmetricKey   `json:"symmetricKey,omitempty"`
	X509Thumbprint *X509Thumbprint `json:"x509Thumbprint,omitempty"`
	Type           string          `json:"type"`
}

// SymmetricKey holds base64 (standard encoding) keys.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// X509Thumbprint holds hex thumbprints; null when unset.
type X509Thumbprint struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

// putModule is the PUT body: only what upstream sends (moduleId, deviceId, and for an
// update managedBy and authentication), never the hub-owned fields.
type putModule struct {
	ModuleID       string          `json:"moduleId"`
	DeviceID       string          `json:"deviceId"`
	ManagedBy      *string         `json:"managedBy,omitempty"`
	Authentication *Authentication `json:"authentication,omitempty"`
}
