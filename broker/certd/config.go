package certd

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/broker/config"
)

// Config is certd's merged configuration (config.md §3.2).
type Config struct {
	HomedirPath    string          `toml:"homedir_path"`
	MaxRequests    int             `toml:"max_requests"`
	CertIssuance   map[string]any  `toml:"cert_issuance"`
	PreloadedCerts map[string]any  `toml:"preloaded_certs"`
	Principals     []Principal     `toml:"principal"`
	Endpoints      Endpoints       `toml:"endpoints"`
	Broker         broker.Settings `toml:"broker"`
}

// Endpoints are upstream's debug-build socket overrides; we honour them so that the
// all-in-one mode can point certd at its keyd.
type Endpoints struct {
	AziotCertd string `toml:"aziot_certd"`
	AziotKeyd  string `toml:"aziot_keyd"`
}

// Principal grants a UID writes to the cert IDs matching its patterns.
type Principal struct {
	UID   uint32   `toml:"uid"`
	Certs []string `toml:"certs"`
}

// Issuance is the parsed [cert_issuance] table.
type Issuance struct {
	EST     map[string]any // global EST settings, used by the EST flow
	LocalCA *LocalCA
	Certs   map[string]IssuanceOptions
}

// LocalCA names the CA certificate and key pair for method = "local_ca".
type LocalCA struct {
	Cert string `toml:"cert"`
	PK   string `toml:"pk"`
}

// IssuanceOptions is [cert_issuance.<certId>].
type IssuanceOptions struct {
	Method     string            `toml:"method"`
	URL        string            `toml:"url"`
	ExpiryDays int64             `toml:"expiry_days"`
	CommonName string            `toml:"common_name"`
	Subject    map[string]string `toml:"subject"`
}

// PreloadedCert is a file path or a list of other cert IDs.
type PreloadedCert struct {
	Path string
	IDs  []string
}

// Parsed is the validated view of a Config.
type Parsed struct {
	Issuance   Issuance
	Preloaded  map[string]PreloadedCert
	Principals map[uint32][]string
}

// Parse validates c: every [cert_issuance] key but est and local_ca must be a cert's
// issuance options; preloaded certs must be file:// URIs or arrays of IDs.
func (c *Config) Parse() (*Parsed, error) {
	if c.HomedirPath == "" {
		return nil, fmt.Errorf("homedir_path is required")
	}
	p := &Parsed{Issuance: Issuance{Certs: map[string]IssuanceOptions{}}, Preloaded: map[string]PreloadedCert{}, Principals: map[uint32][]string{}}
	for key, v := range c.CertIssuance {
		t, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("[cert_issuance.%s] is not a table", key)
		}
		switch key {
		case "est":
			p.Issuance.EST = t
		case "local_ca":
			var ca LocalCA
			if err := config.Decode(t, &ca); err != nil || ca.Cert == "" || ca.PK == "" {
				return nil, fmt.Errorf("[cert_issuance.local_ca] needs cert and pk")
			}
			p.Issuance.LocalCA = &ca
		default:
			var o IssuanceOptions
			if err := config.Decode(t, &o); err != nil {
				return nil, fmt.Errorf("[cert_issuance.%s]: %w", key, err)
			}
			switch o.Method {
			case "est", "local_ca", "self_signed":
			default:
				return nil, fmt.Errorf("[cert_issuance.%s]: unknown method %q", key, o.Method)
			}
			if _, set := t["expiry_days"]; set && o.ExpiryDays <= 0 {
				return nil, fmt.Errorf("[cert_issuance.%s]: expiry_days must be positive", key)
			}
			p.Issuance.Certs[key] = o
		}
	}
	for id, v := range c.PreloadedCerts {
		switch x := v.(type) {
		case string:
			u, err := url.Parse(x)
			if err != nil || u.Scheme != "file" || !filepath.IsAbs(u.Path) {
				return nil, fmt.Errorf("[preloaded_certs] %q: not a file:// URI", id)
			}
			p.Preloaded[id] = PreloadedCert{Path: u.Path}
		case []any:
			var ids []string
			for _, e := range x {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("[preloaded_certs] %q: array of cert IDs expected", id)
				}
				ids = append(ids, s)
			}
			p.Preloaded[id] = PreloadedCert{IDs: ids}
		default:
			return nil, fmt.Errorf("[preloaded_certs] %q: file URI or array of cert IDs expected", id)
		}
	}
	for _, pr := range c.Principals {
		p.Principals[pr.UID] = append(p.Principals[pr.UID], pr.Certs...)
	}
	return p, nil
}

// truncateCN cuts a configured CN to 64 characters, at a character boundary.
func truncateCN(s string) string {
	if r := []rune(s); len(r) > 64 {
		return string(r[:64])
	}
	return s
}

func isCN(name string) bool { return strings.EqualFold(name, "cn") }
