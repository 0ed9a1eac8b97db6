package tpmd

import (
	"fmt"

	"github.com/iotbroker/aziot/broker"
)

// Config is tpmd's merged configuration (config.md §3.4).
type Config struct {
	MaxRequests            int                    `toml:"max_requests"`
	TCTI                   string                 `toml:"tcti"`
	AuthKeyIndex           int64                  `toml:"auth_key_index"`
	HierarchyAuthorization HierarchyAuthorization `toml:"hierarchy_authorization"`
	Broker                 broker.Settings        `toml:"broker"`
}

type HierarchyAuthorization struct {
	Endorsement string `toml:"endorsement"`
	Owner       string `toml:"owner"`
}

// DefaultConfig has upstream's defaults; decode a config over it.
func DefaultConfig() Config {
	return Config{MaxRequests: 10, TCTI: "device", AuthKeyIndex: 0x100}
}

// Validate applies tpmd's start-up checks.
func (c *Config) Validate() error {
	if c.AuthKeyIndex < 0 || c.AuthKeyIndex > 0x7FFFFF {
		return fmt.Errorf("auth_key_index %#x: persistent handle index cannot exceed 0x7F_FF_FF", c.AuthKeyIndex)
	}
	return nil
}
