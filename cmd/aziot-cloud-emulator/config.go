package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/iotbroker/aziot/emulator"
)

// fileConfig is the TOML configuration of the command (docs/emulator.md).
type fileConfig struct {
	PKIDir      string   `toml:"pki_dir"`
	StateDir    string   `toml:"state_dir"`
	IDScopes    []string `toml:"id_scopes"`
	RetryAfter  int      `toml:"retry_after"`
	DNSNames    []string `toml:"dns_names"`
	IPAddresses []string `toml:"ip_addresses"`
	Seed        uint64   `toml:"seed"`
	// OperationTTL is a Go duration string, e.g. "1h".
	OperationTTL string `toml:"operation_ttl"`

	Listeners struct {
		DPS        string `toml:"dps"`
		EST        string `toml:"est"`
		ESTPlain   string `toml:"est_plain"`
		Admin      string `toml:"admin"`
		AdminToken string `toml:"admin_token"`
	} `toml:"listeners"`

	Hubs        []emulator.HubConfig  `toml:"hubs"`
	Enrollments []emulator.Enrollment `toml:"enrollments"`
	ESTLabels   []estLabel            `toml:"est_labels"`
	Faults      []emulator.Fault      `toml:"faults"`

	Switches struct {
		DisabledEnrollment401      bool `toml:"disabled_enrollment_401"`
		HubDisabledDeviceNotFound  bool `toml:"hub_disabled_device_404"`
		ModuleCreateExistingOK     bool `toml:"module_create_existing_ok"`
		ModuleUpdateAbsentNotFound bool `toml:"module_update_absent_404"`
		AllowCSRAnyAPIVersion      bool `toml:"allow_csr_any_api_version"`
		HubMissingAPIVersionOK     bool `toml:"hub_missing_api_version_ok"`
	} `toml:"switches"`
}

// estLabel mirrors emulator.ESTLabelConfig with the validity as a duration string.
type estLabel struct {
	Label                  string            `toml:"label"`
	Users                  map[string]string `toml:"users"`
	Policy                 string            `toml:"policy"`
	Validity               string            `toml:"validity"`
	BootstrapAnyEnrollment bool              `toml:"bootstrap_any_enrollment"`
	CACertsRequireAuth     bool              `toml:"cacerts_require_auth"`
	CACert                 string            `toml:"ca_cert"`
	CAKey                  string            `toml:"ca_key"`
}

// pemOrFile returns v when it is PEM text, else the contents of the file it names.
func pemOrFile(v string) (string, error) {
	if v == "" || strings.Contains(v, "-----BEGIN") {
		return v, nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return "", fmt.Errorf("read certificate file: %w", err)
	}
	return string(b), nil
}

func loadConfig(path string) (emulator.Config, []emulator.Fault, error) {
	var fc fileConfig
	md, err := toml.DecodeFile(path, &fc)
	if err != nil {
		return emulator.Config{}, nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return emulator.Config{}, nil, fmt.Errorf("%s: unknown keys %v", path, und)
	}
	cfg := emulator.Config{
		DPSAddr: fc.Listeners.DPS, ESTAddr: fc.Listeners.EST, ESTPlainAddr: fc.Listeners.ESTPlain, AdminAddr: fc.Listeners.Admin, AdminToken: fc.Listeners.AdminToken,
		IDScopes: fc.IDScopes, Hubs: fc.Hubs, PKIDir: fc.PKIDir, StateDir: fc.StateDir, RetryAfter: fc.RetryAfter,
		DNSNames: fc.DNSNames, Seed: fc.Seed,
	}
	cfg.Switches = emulator.Switches(fc.Switches)
	if fc.OperationTTL != "" {
		if cfg.OperationTTL, err = time.ParseDuration(fc.OperationTTL); err != nil {
			return cfg, nil, fmt.Errorf("operation_ttl: %w", err)
		}
	}
	for _, s := range fc.IPAddresses {
		ip := net.ParseIP(s)
		if ip == nil {
			return cfg, nil, fmt.Errorf("ip_addresses: %q is not an IP address", s)
		}
		cfg.IPAddresses = append(cfg.IPAddresses, ip)
	}
	for i := range cfg.Hubs {
		for j, c := range cfg.Hubs[i].CACertsPEM {
			if cfg.Hubs[i].CACertsPEM[j], err = pemOrFile(c); err != nil {
				return cfg, nil, fmt.Errorf("hub %q: %w", cfg.Hubs[i].Name, err)
			}
		}
	}
	for _, en := range fc.Enrollments {
		for _, p := range []*string{&en.PrimaryCertPEM, &en.SecondaryCertPEM, &en.SigningCertPEM} {
			if *p, err = pemOrFile(*p); err != nil {
				return cfg, nil, fmt.Errorf("enrollment %q: %w", en.ID, err)
			}
		}
		cfg.Enrollments = append(cfg.Enrollments, en)
	}
	for _, l := range fc.ESTLabels {
		lc := emulator.ESTLabelConfig{Label: l.Label, Users: l.Users, Policy: l.Policy, BootstrapAnyEnrollment: l.BootstrapAnyEnrollment,
			CACertsRequireAuth: l.CACertsRequireAuth, CACertPath: l.CACert, CAKeyPath: l.CAKey}
		if l.Validity != "" {
			if lc.Validity, err = time.ParseDuration(l.Validity); err != nil {
				return cfg, nil, fmt.Errorf("EST label %q validity: %w", l.Label, err)
			}
		}
		cfg.ESTLabels = append(cfg.ESTLabels, lc)
	}
	return cfg, fc.Faults, nil
}
