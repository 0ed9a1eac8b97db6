package keyd

import (
	"fmt"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/hsm"
)

// Config is keyd's merged configuration (config.md §3.1).
type Config struct {
	MaxRequests   int               `toml:"max_requests"`
	AziotKeys     map[string]string `toml:"aziot_keys"`
	PreloadedKeys map[string]string `toml:"preloaded_keys"`
	Principals    []Principal       `toml:"principal"`
	Broker        broker.Settings   `toml:"broker"`
}

// Principal grants a UID the key IDs matching its patterns.
type Principal struct {
	UID  uint32   `toml:"uid"`
	Keys []string `toml:"keys"`
}

// Validate applies keyd's start-up checks.
func (c *Config) Validate() error {
	for k := range c.AziotKeys {
		switch k {
		case "homedir_path", "pkcs11_lib_path", "pkcs11_base_slot":
		default:
			return fmt.Errorf("unknown [aziot_keys] setting %q", k)
		}
	}
	return nil
}

// KeystoreConfig is the hsm view of the config.
func (c *Config) KeystoreConfig() hsm.Config {
	return hsm.Config{
		HomedirPath:    c.AziotKeys["homedir_path"],
		PKCS11LibPath:  c.AziotKeys["pkcs11_lib_path"],
		PKCS11BaseSlot: c.AziotKeys["pkcs11_base_slot"],
		Preloaded:      c.PreloadedKeys,
	}
}

// principalPatterns unions the patterns of every entry per UID.
func principalPatterns(ps []Principal) map[uint32][]string {
	out := map[uint32][]string{}
	for _, p := range ps {
		out[p.UID] = append(out[p.UID], p.Keys...)
	}
	return out
}

// policyData is the `data` document the default policy reads.
