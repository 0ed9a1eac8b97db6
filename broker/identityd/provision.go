package identityd

import (
	"context"
	"errors"
	"fmt"
)

// DeviceRecord is what a provisioner returns: the device identityd acts as (flows.md §3,
// §4). It carries key and cert IDs, never key material.
type DeviceRecord struct {
	// HubName is the IoT Hub host name as provisioned (iothub_hostname, DPS assignedHub).
	HubName string
	// GatewayHost is local_gateway_hostname when configured, else HubName.
	GatewayHost string
	DeviceID    string
	Auth        DeviceAuth
}

// DeviceAuth is the device's credential: SAS with a keyd symmetric key, X.509 with a keyd
// key pair and a certd cert, or TPM.
type DeviceAuth struct {
	Type   string // "sas", "x509" or "tpm"
	KeyID  string // keyd key ID (sas: device_id_pk; x509: identity_pk)
	CertID string // certd cert ID (x509 only)
}

// Provisioner is the seam between identityd and the provisioning flows: identityd asks it
// for the device record at start, on reprovision, and after a non-network hub error
// (flows.md §8.1). Manual provisioning is native; the DPS flows plug in here later.
type Provisioner interface {
	// Provision returns the device record. reprovision is true when the caller wants a
	// fresh provisioning even if a backup exists (DPS registers again).
	Provision(ctx context.Context, reprovision bool) (*DeviceRecord, error)
}

// errNoSource is returned by a provisioner that has nothing to provision (source none).
var errNoSource = errors.New("provisioning source is none")

// manualProvisioner builds the device record from config: no network call (flows.md §3).
type manualProvisioner struct{ p *Provisioning }

func (m manualProvisioner) Provision(context.Context, bool) (*DeviceRecord, error) {
	p := m.p
	rec := &DeviceRecord{HubName: p.IothubHostname, GatewayHost: p.IothubHostname, DeviceID: p.DeviceID}
	if p.LocalGatewayHostname != "" {
		rec.GatewayHost = p.LocalGatewayHostname
	}
	a := p.Authentication
	switch {
	case a == nil:
		return nil, errors.New("manual provisioning: no authentication configured")
	case a.Method == "sas":
		rec.Auth = DeviceAuth{Type: "sas", KeyID: a.DeviceIDPK}
	case a.Method == "x509":
		rec.Auth = DeviceAuth{Type: "x509", KeyID: a.IdentityPK, CertID: a.IdentityCert}
	default:
		return nil, fmt.Errorf("manual provisioning: unknown authentication method %q", a.Method)
	}
	return rec, nil
}

type noneProvisioner struct{}

func (noneProvisioner) Provision(context.Context, bool) (*DeviceRecord, error) {
	return nil, errNoSource
}

// unsupportedProvisioner stands for a source whose flow has not landed yet (DPS): start-up
// provisioning fails with it, and identityd answers "device identity not found".
type unsupportedProvisioner struct{ source string }

func (u unsupportedProvisioner) Provision(context.Context, bool) (*DeviceRecord, error) {
	return nil, fmt.Errorf("provisioning source %q is not implemented yet", u.source)
}

// provisionerFor picks the native provisioner of a config.
func provisionerFor(p *Provisioning) Provisioner {
	switch p.Source {
	case "manual":
		return manualProvisioner{p: p}
	case "none":
		return noneProvisioner{}
	}
	return unsupportedProvisioner{source: p.Source}
}
