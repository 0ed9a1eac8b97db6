package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/broker/certd"
	"github.com/iotbroker/aziot/broker/config"
	"github.com/iotbroker/aziot/broker/identityd"
	"github.com/iotbroker/aziot/broker/keyd"
	"github.com/iotbroker/aziot/policy"
)

// Keyd is the keys service unit with upstream's paths, overridable as upstream allows.
func Keyd() Unit {
	return Unit{
		Name:       "keyd",
		ConfigFile: EnvOr("AZIOT_KEYD_CONFIG", "/etc/aziot/keyd/config.toml"),
		ConfigDir:  EnvOr("AZIOT_KEYD_CONFIG_DIR", "/etc/aziot/keyd/config.d"),
		Socket:     "/run/aziot/keyd.sock",
		Build:      buildKeyd,
	}
}

// Certd is the certificates service unit.
func Certd() Unit {
	return Unit{
		Name:       "certd",
		ConfigFile: EnvOr("AZIOT_CERTD_CONFIG", "/etc/aziot/certd/config.toml"),
		ConfigDir:  EnvOr("AZIOT_CERTD_CONFIG_DIR", "/etc/aziot/certd/config.d"),
		Socket:     "/run/aziot/certd.sock",
		Build:      buildCertd,
	}
}

type keydRunning struct {
	svc *keyd.Service
	cfg *keyd.Config
}

func buildKeyd(mainPath, dirPath string, log *slog.Logger) (Running, error) {
	var cfg keyd.Config
	if err := config.Load(mainPath, dirPath, &cfg); err != nil {
		return nil, err
	}
	p11 := keyd.PKCS11Backend(cfg.AziotKeys["pkcs11_lib_path"], log)
	svc, err := keyd.New(&cfg, keyd.Options{Log: log, PKCS11: p11})
	if err != nil {
		return nil, err
	}
	return &keydRunning{svc: svc, cfg: &cfg}, nil
}

func (k *keydRunning) HTTPService() *broker.Service  { return k.svc.HTTP }
func (k *keydRunning) ReloadDebounce() time.Duration { return k.cfg.Broker.ReloadDebounce() }
func (k *keydRunning) Close()                        {}
func (k *keydRunning) Policy() (*policy.Engine, broker.Settings) {
	return k.svc.Engine(), k.cfg.Broker
}
func (k *keydRunning) Reload(mainPath, dirPath string) error {
	var cfg keyd.Config
	if err := config.Load(mainPath, dirPath, &cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	return k.svc.Reload(&cfg)
}

type certdRunning struct {
	svc *certd.Service
	cfg *certd.Config
}

func buildCertd(mainPath, dirPath string, log *slog.Logger) (Running, error) {
	var cfg certd.Config
	if err := config.Load(mainPath, dirPath, &cfg); err != nil {
		return nil, err
	}
	svc, err := certd.New(&cfg, certd.Options{Log: log})
	if err != nil {
		return nil, err
	}
	return &certdRunning{svc: svc, cfg: &cfg}, nil
}

func (c *certdRunning) HTTPService() *broker.Service  { return c.svc.HTTP }
func (c *certdRunning) ReloadDebounce() time.Duration { return c.cfg.Broker.ReloadDebounce() }
func (c *certdRunning) Close()                        { c.svc.Close() }
func (c *certdRunning) Policy() (*policy.Engine, broker.Settings) {
	return c.svc.Engine(), c.cfg.Broker
}
func (c *certdRunning) Reload(mainPath, dirPath string) error {
	var cfg certd.Config
	if err := config.Load(mainPath, dirPath, &cfg); err != nil {
		return err
	}
	return c.svc.Reload(&cfg)
}

// ByName returns the unit for a service name.
func ByName(name string) (Unit, error) {
	switch name {
	case "keyd":
		return Keyd(), nil
	case "certd":
		return Certd(), nil
	case "identityd":
		return Identityd(), nil
	}
	return Unit{}, fmt.Errorf("unknown service %q", name)
}

// Identityd is the identity service unit.
func Identityd() Unit {
	return Unit{
		Name:       "identityd",
		ConfigFile: EnvOr("AZIOT_IDENTITYD_CONFIG", "/etc/aziot/identityd/config.toml"),
		ConfigDir:  EnvOr("AZIOT_IDENTITYD_CONFIG_DIR", "/etc/aziot/identityd/config.d"),
		Socket:     "/run/aziot/identityd.sock",
		Build:      buildIdentityd,
	}
}

type identitydRunning struct {
	svc *identityd.Service
	cfg *identityd.Config
	// ctx ends at Close: it bounds start-up provisioning, its retries and reloads.
	ctx    context.Context
	cancel context.CancelFunc
}

// loadIdentityd reads and validates identityd's config; an error names the files.
func loadIdentityd(mainPath, dirPath string) (*identityd.Config, error) {
	cfg := identityd.DefaultConfig()
	if err := config.Load(mainPath, dirPath, &cfg); err != nil {
		return nil, fmt.Errorf("config %s (with %s): %w", mainPath, dirPath, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s (with %s): %w", mainPath, dirPath, err)
	}
	return &cfg, nil
}

func buildIdentityd(mainPath, dirPath string, log *slog.Logger) (Running, error) {
	cfg, err := loadIdentityd(mainPath, dirPath)
	if err != nil {
		return nil, err
	}
	svc, err := identityd.New(cfg, identityd.Options{Log: log})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &identitydRunning{svc: svc, cfg: cfg, ctx: ctx, cancel: cancel}, nil
}

func (i *identitydRunning) HTTPService() *broker.Service  { return i.svc.HTTP }
func (i *identitydRunning) ReloadDebounce() time.Duration { return i.cfg.Broker.ReloadDebounce() }
func (i *identitydRunning) Close()                        { i.cancel(); i.svc.Close() }
func (i *identitydRunning) Policy() (*policy.Engine, broker.Settings) {
	return i.svc.Engine(), i.cfg.Broker
}
func (i *identitydRunning) Reload(mainPath, dirPath string) error {
	cfg, err := loadIdentityd(mainPath, dirPath)
	if err != nil {
		return err
	}
	return i.svc.Reload(i.ctx, cfg)
}

// Start runs start-up provisioning and reconciliation.
func (i *identitydRunning) Start(ctx context.Context) error { return i.svc.Start(ctx) }

// StartRetry is the first wait between failed start-up provisionings when identityd
// shares the process with other services; it doubles up to a minute.
func (i *identitydRunning) StartRetry() time.Duration {
	if ms := i.cfg.Broker.ProvisioningRetryMS; ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return 5 * time.Second
}
