package state

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/iotbroker/aziot/internal/atomicfile"
)

// DecodePrevModules returns the names of the principals whose idtype contains "module"
// in a prev_state file (the settings TOML of the last reconciliation, flows.md §8.2).
// Only the parts reconciliation needs are checked: the file must be TOML, each
// [[principal]] must have an integer uid, a string name and known idtype values.
func DecodePrevModules(data []byte) (map[string]bool, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("parse prev_state: not valid UTF-8")
	}
	var raw struct {
		Principal []struct {
			UID    *int64   `toml:"uid"`
			Name   *string  `toml:"name"`
			IDType []string `toml:"idtype"`
		} `toml:"principal"`
	}
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, fmt.Errorf("parse prev_state: %w", err)
	}
	mods := map[string]bool{}
	for i, p := range raw.Principal {
		if p.UID == nil || *p.UID < 0 || *p.UID > 1<<32-1 {
			return nil, fmt.Errorf("parse prev_state: principal %d: missing or invalid `uid`", i)
		}
		if p.Name == nil {
			return nil, fmt.Errorf("parse prev_state: principal %d: missing field `name`", i)
		}
		for _, t := range p.IDType {
			if t != "device" && t != "module" && t != "local" {
				return nil, fmt.Errorf("parse prev_state: principal %q: unknown idtype %q", *p.Name, t)
			}
		}
		if slices.Contains(p.IDType, "module") {
			mods[*p.Name] = true
		}
	}
	return mods, nil
}

// PrevModules is step 2 of reconciliation (flows.md §8.2): the modules identityd created
// in the last reconciliation, but only when both prev_state and device_info exist and
// device_info describes cur (same hub, gateway and device). A different hub or device
// means those modules are not ours on this device, so the set is empty. It never fails:
// the error, when not nil, says why the set is empty (for a log line).
func PrevModules(homedir string, cur DeviceInfo) (map[string]bool, error) {
	empty := map[string]bool{}
	prevData, err := os.ReadFile(PrevStatePath(homedir))
	if err != nil {
		return empty, fmt.Errorf("read prev_state: %w", err)
	}
	prev, err := ReadDeviceInfo(homedir)
	if err != nil {
		return empty, err
	}
	if prev != cur {
		return empty, nil
	}
	mods, err := DecodePrevModules(prevData)
	if err != nil {
		return empty, err
	}
	return mods, nil
}

// WritePrevState atomically replaces <homedir>/prev_state with settings, the TOML
// serialization of the settings just reconciled.
func WritePrevState(homedir string, settings []byte) error {
	if err := atomicfile.Write(PrevStatePath(homedir), settings, fileMode); err != nil {
		return fmt.Errorf("write prev_state: %w", err)
	}
	return nil
}

// WriteReconciled records a finished reconciliation (flows.md §8.2 step 5). prev_state
// is written before device_info (upstream does the reverse): a crash between the two
// then leaves an old device_info, which no longer matches the device and so empties the
// previous set (modules are recreated), rather than new device_info with an old
// principal list, which could delete modules that are not ours on a new device.
func WriteReconciled(homedir string, d DeviceInfo, settings []byte) error {
	if err := WritePrevState(homedir, settings); err != nil {
		return err
	}
	return WriteDeviceInfo(homedir, d)
}
