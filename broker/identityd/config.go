package identityd

import (
	"errors"
	"fmt"
	"slices"

	"github.com/iotbroker/aziot/broker"
)

// Config is identityd's merged configuration (config.md §3.3).
type Config struct {
	Hostname                  string          `toml:"hostname"`
	Homedir                   string          `toml:"homedir"`
	PreferModuleIdentityCache bool            `toml:"prefer_module_identity_cache"`
	MaxRequests               int             `toml:"max_requests"`
	CloudTimeoutSec           int64           `toml:"cloud_timeout_sec"`
	CloudRetries              int64           `toml:"cloud_retries"`
	Provisioning              *Provisioning   `toml:"provisioning"`
	Principals                []Principal     `toml:"principal"`
	LocalID                   *LocalID        `toml:"localid"`
	Endpoints                 Endpoints       `toml:"endpoints"`
	Broker                    broker.Settings `toml:"broker"`
}

// Endpoints are upstream's debug-build socket overrides; tests and `aziotd dev` point
// them at their own sockets. Written as unix:// URIs or plain paths.
type Endpoints struct {
	AziotCertd     string `toml:"aziot_certd"`
	AziotIdentityd string `toml:"aziot_identityd"`
	AziotKeyd      string `toml:"aziot_keyd"`
	AziotTpmd      string `toml:"aziot_tpmd"`
}

// DefaultConfig has upstream's defaults; decode a config over it.
func DefaultConfig() Config {
	return Config{MaxRequests: 10, CloudTimeoutSec: 70, CloudRetries: 1}
}

// Provisioning holds the keys of every source; Source says which apply.
type Provisioning struct {
	LocalGatewayHostname string `toml:"local_gateway_hostname"`
	Source               string `toml:"source"`
	// manual
	IothubHostname string      `toml:"iothub_hostname"`
	DeviceID       string      `toml:"device_id"`
	Authentication *ManualAuth `toml:"authentication"`
	// dps
	GlobalEndpoint string       `toml:"global_endpoint"`
	ScopeID        string       `toml:"scope_id"`
	Attestation    *Attestation `toml:"attestation"`
	Payload        *Payload     `toml:"payload"`
}

// ManualAuth is [provisioning.authentication]: sas or x509.
type ManualAuth struct {
	Method       string `toml:"method"`
	DeviceIDPK   string `toml:"device_id_pk"`
	IdentityCert string `toml:"identity_cert"`
	IdentityPK   string `toml:"identity_pk"`
	CSRSubject   any    `toml:"csr_subject"` // string (CN) or table
}

// Attestation is [provisioning.attestation]: symmetric_key, x509 or tpm.
type Attestation struct {
	Method            string     `toml:"method"`
	RegistrationID    any        `toml:"registration_id"` // string, or table for x509
	SymmetricKey      string     `toml:"symmetric_key"`
	IdentityCert      string     `toml:"identity_cert"`
	IdentityPK        string     `toml:"identity_pk"`
	IdentityAutoRenew *AutoRenew `toml:"identity_auto_renew"`
}

type AutoRenew struct {
	RotateKey bool   `toml:"rotate_key"`
	Threshold string `toml:"threshold"`
	Retry     string `toml:"retry"`
}

type Payload struct {
	URI string `toml:"uri"`
}

// Principal is a caller identityd knows (api-identity.md §1).
type Principal struct {
	UID     uint32         `toml:"uid"`
	Name    string         `toml:"name"`
	IDType  []string       `toml:"idtype"`
	LocalID *PrincipalOpts `toml:"localid"`
}

type PrincipalOpts struct {
	Type       string `toml:"type"`
	Attributes string `toml:"attributes"`
}

type LocalID struct {
	Domain string `toml:"domain"`
}

// ManualHub returns the hub a manually provisioned device talks to: the local gateway
// when there is one, else the IoT Hub; "" for other sources.
func (c *Config) ManualHub() string {
	p := c.Provisioning
	if p == nil || p.Source != "manual" {
		return ""
	}
	if p.LocalGatewayHostname != "" {
		return p.LocalGatewayHostname
	}
	return p.IothubHostname
}

// Validate applies identityd's start-up checks; any error is fatal at start.
func (c *Config) Validate() error {
	if c.Hostname == "" {
		return errors.New("missing field `hostname`")
	}
	if c.Homedir == "" {
		return errors.New("missing field `homedir`")
	}
	if c.CloudTimeoutSec < 70 {
		return errors.New("cloud_timeout_sec must be at least 70 seconds")
	}
	if c.CloudRetries < 0 {
		return errors.New("cloud_retries must not be negative")
	}
	if err := c.Provisioning.validate(); err != nil {
		return err
	}
	names := map[string]bool{}
	for _, p := range c.Principals {
		if names[p.Name] {
			return fmt.Errorf("duplicate principal name %q", p.Name)
		}
		names[p.Name] = true
		for _, t := range p.IDType {
			if t != "device" && t != "module" && t != "local" {
				return fmt.Errorf("principal %q: unknown idtype %q", p.Name, t)
			}
		}
		if p.IDType != nil {
			hasLocal := slices.Contains(p.IDType, "local")
			if hasLocal && c.LocalID == nil {
				return fmt.Errorf("principal %q has idtype local but [localid] is not configured", p.Name)
			}
			if !hasLocal && p.LocalID != nil {
				return fmt.Errorf("principal %q has localid options but its idtype does not include local", p.Name)
			}
		}
		if c.Provisioning.Source == "none" && (slices.Contains(p.IDType, "module") || slices.Contains(p.IDType, "device")) {
			return fmt.Errorf("principal %q: module and device identities cannot be used with provisioning source none", p.Name)
		}
	}
	return nil
}

func (p *Provisioning) validate() error {
	if p == nil {
		return errors.New("missing field `provisioning`")
	}
	req := func(v, name string) error {
		if v == "" {
			return fmt.Errorf("provisioning: missing field `%s`", name)
		}
		return nil
	}
	switch p.Source {
	case "none":
		return nil
	case "manual":
		if err := errors.Join(req(p.IothubHostname, "iothub_hostname"), req(p.DeviceID, "device_id")); err != nil {
			return err
		}
		a := p.Authentication
		if a == nil {
			return errors.New("provisioning: missing field `authentication`")
		}
		switch a.Method {
		case "sas":
			return req(a.DeviceIDPK, "device_id_pk")
		case "x509":
			return errors.Join(req(a.IdentityCert, "identity_cert"), req(a.IdentityPK, "identity_pk"))
		}
		return fmt.Errorf("provisioning.authentication: unknown method %q", a.Method)
	case "dps":
		if err := errors.Join(req(p.GlobalEndpoint, "global_endpoint"), req(p.ScopeID, "scope_id")); err != nil {
			return err
		}
		a := p.Attestation
		if a == nil {
			return errors.New("provisioning: missing field `attestation`")
		}
		rid, _ := a.RegistrationID.(string)
		switch a.Method {
		case "symmetric_key":
			return errors.Join(req(rid, "registration_id"), req(a.SymmetricKey, "symmetric_key"))
		case "tpm":
			return req(rid, "registration_id")
		case "x509":
			return errors.Join(req(a.IdentityCert, "identity_cert"), req(a.IdentityPK, "identity_pk"))
		}
		return fmt.Errorf("provisioning.attestation: unknown method %q", a.Method)
	}
	return fmt.Errorf("provisioning: unknown source %q", p.Source)
}
