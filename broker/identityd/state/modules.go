package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/iotbroker/aziot/internal/atomicfile"
)

// Module is one module cache record (flows.md §9). Optional fields are pointers because
// upstream tells absent from empty: an absent field is omitted from the file, an empty
// one is written as "".
type Module struct {
	ModuleID     string
	ManagedBy    *string
	DeviceID     string
	GenerationID *string
}

// EncodeModule renders m as upstream does (serde_json::to_string: compact, keys in
// this order, absent optional fields omitted, serde_json's string escapes).
func EncodeModule(m Module) ([]byte, error) {
	var b strings.Builder
	field := func(first bool, k, v string) error {
		if !utf8.ValidString(v) {
			return fmt.Errorf("module record: %s is not valid UTF-8", k)
		}
		if !first {
			b.WriteByte(',')
		}
		b.WriteString(`"` + k + `":`)
		writeJSONString(&b, v)
		return nil
	}
	b.WriteByte('{')
	if err := field(true, "moduleId", m.ModuleID); err != nil {
		return nil, err
	}
	if m.ManagedBy != nil {
		if err := field(false, "managedBy", *m.ManagedBy); err != nil {
			return nil, err
		}
	}
	if err := field(false, "deviceId", m.DeviceID); err != nil {
		return nil, err
	}
	if m.GenerationID != nil {
		if err := field(false, "generationId", *m.GenerationID); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

// writeJSONString escapes as serde_json does: only '"', '\\' and control characters,
// with short forms where JSON has them and lowercase \u00xx otherwise (no HTML or
// U+2028 escaping, unlike encoding/json).
func writeJSONString(b *strings.Builder, s string) {
	const hexdig = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\f':
			b.WriteString(`\f`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hexdig[c>>4])
			b.WriteByte(hexdig[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// DecodeModule parses a module cache record. As upstream: moduleId and deviceId are
// required strings, managedBy and generationId optional strings or null, other keys
// (e.g. authentication) ignored, keys matched case-sensitively.
func DecodeModule(data []byte) (Module, error) {
	// encoding/json would replace invalid UTF-8 silently; upstream rejects it.
	if !utf8.Valid(data) {
		return Module{}, errors.New("parse module record: not valid UTF-8")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Module{}, fmt.Errorf("parse module record: %w", err)
	}
	if raw == nil {
		return Module{}, errors.New("parse module record: not a JSON object")
	}
	str := func(k string, required bool) (*string, error) {
		v, ok := raw[k]
		if !ok || string(v) == "null" {
			if required {
				return nil, fmt.Errorf("parse module record: missing field `%s`", k)
			}
			return nil, nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("parse module record: field `%s`: %w", k, err)
		}
		return &s, nil
	}
	var m Module
	mid, err := str("moduleId", true)
	if err != nil {
		return Module{}, err
	}
	did, err := str("deviceId", true)
	if err != nil {
		return Module{}, err
	}
	m.ModuleID, m.DeviceID = *mid, *did
	if m.ManagedBy, err = str("managedBy", false); err != nil {
		return Module{}, err
	}
	if m.GenerationID, err = str("generationId", false); err != nil {
		return Module{}, err
	}
	return m, nil
}

// ModuleCache is the module cache of one device: <homedir>/modules/<hub>-<device>/.
type ModuleCache struct {
	Homedir  string
	Hub      string // IoT Hub host name (device_info hub_name), not the gateway
	DeviceID string
}

// Dir is the cache directory of this device.
func (c ModuleCache) Dir() string { return DeviceModulesDir(c.Homedir, c.Hub, c.DeviceID) }

// SetDevice prepares the cache when a device is set (provisioned or restored): if this
// device has no cache directory yet, the whole modules directory is removed first so
// that the caches of earlier devices or hubs are discarded (flows.md §9), then the
// directory is created. An existing directory is kept with its records.
func (c ModuleCache) SetDevice() error {
	dir := c.Dir()
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("module cache %q is not a directory", dir)
		}
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("module cache: %w", err)
	}
	if err := removeAll(filepath.Join(c.Homedir, ModulesDir)); err != nil {
		return fmt.Errorf("discard old module caches: %w", err)
	}
	if err := atomicfile.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create module cache: %w", err)
	}
	return nil
}

// Clear removes this device's cache directory (reprovisioning, flows.md §8.1).
func (c ModuleCache) Clear() error {
	if err := removeAll(c.Dir()); err != nil {
		return fmt.Errorf("clear module cache: %w", err)
	}
	return nil
}

// Write stores m under its module ID, creating the directory if needed.
func (c ModuleCache) Write(m Module) error {
	data, err := EncodeModule(m)
	if err != nil {
		return err
	}
	if err := atomicfile.MkdirAll(c.Dir(), dirMode); err != nil {
		return fmt.Errorf("create module cache: %w", err)
	}
	if err := atomicfile.Write(ModulePath(c.Homedir, c.Hub, c.DeviceID, m.ModuleID), data, fileMode); err != nil {
		return fmt.Errorf("write module cache of %q: %w", m.ModuleID, err)
	}
	return nil
}

// Remove deletes the record of moduleID; a missing record is not an error.
func (c ModuleCache) Remove(moduleID string) error {
	if err := atomicfile.Remove(ModulePath(c.Homedir, c.Hub, c.DeviceID, moduleID)); err != nil {
		return fmt.Errorf("remove module cache of %q: %w", moduleID, err)
	}
	return nil
}

// Read returns the record of moduleID. A missing record is an error matching
// fs.ErrNotExist.
func (c ModuleCache) Read(moduleID string) (Module, error) {
	data, err := os.ReadFile(ModulePath(c.Homedir, c.Hub, c.DeviceID, moduleID))
	if err != nil {
		return Module{}, fmt.Errorf("read module cache of %q: %w", moduleID, err)
	}
	m, err := DecodeModule(data)
	if err != nil {
		return Module{}, fmt.Errorf("module cache of %q: %w", moduleID, err)
	}
	return m, nil
}

// List returns every record in the directory, in file-name order. Like upstream, one
// unreadable record fails the whole list (the caller then falls back to the Hub, or
// reports the error). Subdirectories and our own interrupted temp files are skipped.
func (c ModuleCache) List() ([]Module, error) {
	dir := c.Dir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list module cache: %w", err)
	}
	var out []Module
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("list module cache: %w", err)
		}
		m, err := DecodeModule(data)
		if err != nil {
			return nil, fmt.Errorf("list module cache: %s: %w", e.Name(), err)
		}
		out = append(out, m)
	}
	return out, nil
}

// removeAll deletes dir and everything in it, durably.
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
