package daemon

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/broker/certd"
	"github.com/iotbroker/aziot/broker/config"
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
	}
	return Unit{}, fmt.Errorf("unknown service %q", name)
}
