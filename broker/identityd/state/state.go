// Package state reads and writes identityd's persistent files in upstream's homedir
// layout and formats (flows.md §8, §9), so that a homedir written by upstream keeps
// working after the switch and the other way round:
//
//	<homedir>/device_info   TOML hub_name, local_gateway_hostname, device_id
//	<homedir>/prev_state    TOML of the settings used in the last reconciliation
//	<homedir>/modules/<sha256hex(hub)>-<sha256hex(device)>/<alnum(module)>-<sha256hex(module)>
//	                        JSON module record
//
// It also holds the module key derivation (flows.md §5). Every write goes through
// internal/atomicfile so that a crash leaves the old or the new file.
package state

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
)

// File and directory names inside identityd's homedir, as upstream names them.
const (
	DeviceInfoFile = "device_info"
	PrevStateFile  = "prev_state"
	ModulesDir     = "modules"
)

// Modes of what we create: the homedir is the service user's alone (config.md §1.1).
const (
	fileMode = 0o600
	dirMode  = 0o700
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// alnum keeps only the ASCII letters and digits of s, as upstream's file names do.
func alnum(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// DeviceInfoPath is <homedir>/device_info.
func DeviceInfoPath(homedir string) string { return filepath.Join(homedir, DeviceInfoFile) }

// PrevStatePath is <homedir>/prev_state.
func PrevStatePath(homedir string) string { return filepath.Join(homedir, PrevStateFile) }

// DeviceModulesDir is the module cache directory of one device of one hub. hub is the
// IoT Hub host name (not the gateway), as upstream keys it.
func DeviceModulesDir(homedir, hub, deviceID string) string {
	return filepath.Join(homedir, ModulesDir, sha256Hex(hub)+"-"+sha256Hex(deviceID))
}

// ModulePath is the cache file of one module. The hash keeps IDs that differ only in
// non-alphanumerics apart; the alphanumeric prefix keeps the names readable.
func ModulePath(homedir, hub, deviceID, moduleID string) string {
	return filepath.Join(DeviceModulesDir(homedir, hub, deviceID), alnum(moduleID)+"-"+sha256Hex(moduleID))
}
