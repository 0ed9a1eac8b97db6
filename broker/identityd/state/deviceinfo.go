package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/iotbroker/aziot/internal/atomicfile"
)

// DeviceInfo is the content of <homedir>/device_info: the device identityd provisioned
// last. It is the DPS backup used at start (flows.md §4.5) and, compared with the
// current device, decides whether prev_state applies (flows.md §8.2).
// LocalGatewayHostname is always set by upstream (the hub when no gateway is configured).
type DeviceInfo struct {
	HubName              string
	LocalGatewayHostname string
	DeviceID             string
}

// unprovisioned is the whole content upstream reads as "no device".
const unprovisioned = "unprovisioned"

// ErrUnprovisioned is returned by DecodeDeviceInfo and ReadDeviceInfo for a file that
// says "unprovisioned": the file is valid but names no device.
var ErrUnprovisioned = errors.New("device_info: unprovisioned")

// EncodeDeviceInfo renders d as upstream does (toml::to_string of its three fields, in
// this order, strings quoted as the toml crate chooses).
func EncodeDeviceInfo(d DeviceInfo) ([]byte, error) {
	var b strings.Builder
	for _, kv := range [...][2]string{
		{"hub_name", d.HubName},
		{"local_gateway_hostname", d.LocalGatewayHostname},
		{"device_id", d.DeviceID},
	} {
		if !utf8.ValidString(kv[1]) {
			return nil, fmt.Errorf("device_info: %s is not valid UTF-8", kv[0])
		}
		b.WriteString(kv[0])
		b.WriteString(" = ")
		writeTOMLString(&b, kv[1])
		b.WriteByte('\n')
	}
	return []byte(b.String()), nil
}

// EncodeUnprovisioned is the content upstream reads as "no device".
func EncodeUnprovisioned() []byte { return []byte(unprovisioned) }

// DecodeDeviceInfo parses a device_info file. Like upstream, all three keys are
// required strings and other keys are ignored; the exact text "unprovisioned" yields
// ErrUnprovisioned.
func DecodeDeviceInfo(data []byte) (DeviceInfo, error) {
	if string(data) == unprovisioned {
		return DeviceInfo{}, ErrUnprovisioned
	}
	if !utf8.Valid(data) {
		return DeviceInfo{}, errors.New("parse device_info: not valid UTF-8")
	}
	var raw struct {
		HubName              string `toml:"hub_name"`
		LocalGatewayHostname string `toml:"local_gateway_hostname"`
		DeviceID             string `toml:"device_id"`
	}
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("parse device_info: %w", err)
	}
	for _, k := range [...]string{"hub_name", "local_gateway_hostname", "device_id"} {
		if !md.IsDefined(k) {
			return DeviceInfo{}, fmt.Errorf("parse device_info: missing field `%s`", k)
		}
	}
	return DeviceInfo(raw), nil
}

// ReadDeviceInfo reads <homedir>/device_info. A missing file is an error matching
// fs.ErrNotExist; an unparsable one is an error the caller deletes and ignores
// (flows.md §4.5).
func ReadDeviceInfo(homedir string) (DeviceInfo, error) {
	data, err := os.ReadFile(DeviceInfoPath(homedir))
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("read device_info: %w", err)
	}
	return DecodeDeviceInfo(data)
}

// WriteDeviceInfo atomically replaces <homedir>/device_info.
func WriteDeviceInfo(homedir string, d DeviceInfo) error {
	data, err := EncodeDeviceInfo(d)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(DeviceInfoPath(homedir), data, fileMode); err != nil {
		return fmt.Errorf("write device_info: %w", err)
	}
	return nil
}

// RemoveDeviceInfo deletes <homedir>/device_info; a missing file is not an error.
func RemoveDeviceInfo(homedir string) error {
	if err := atomicfile.Remove(DeviceInfoPath(homedir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove device_info: %w", err)
	}
	return nil
}

// writeTOMLString writes s as a TOML string value the way the toml crate (toml_writer
// 1.x, upstream 1.6.0's lock file) picks and escapes it, so that our files are the
// bytes upstream would write: basic if no escapes are needed, else literal, else the
// multi-line forms, else an escaped basic string.
func writeTOMLString(b *strings.Builder, s string) {
	var maxSingle, maxDouble, runSingle, runDouble int
	var escapeCodes, backslash, newline bool
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\'' {
			runSingle++
			maxSingle = max(maxSingle, runSingle)
		} else {
			runSingle = 0
		}
		if c == '"' {
			runDouble++
			maxDouble = max(maxDouble, runDouble)
		} else {
			runDouble = 0
		}
		switch {
		case c == '\\':
			backslash = true
		case c == '\t':
		case c == '\n':
			newline = true
		case c <= 0x1f || c == 0x7f:
			escapeCodes = true
		}
	}
	switch {
	case !escapeCodes && !backslash && maxDouble == 0 && !newline:
		writeBasic(b, s, false, newline)
	case !escapeCodes && maxSingle == 0 && !newline:
		b.WriteString("'" + s + "'")
	case !escapeCodes && !backslash && maxDouble <= 2:
		writeBasic(b, s, true, newline)
	case !escapeCodes && maxSingle <= 2:
		b.WriteString("'''")
		if newline {
			b.WriteByte('\n')
		}
		b.WriteString(s + "'''")
	default:
		writeBasic(b, s, newline, newline)
	}
}

// writeBasic writes a basic (or multi-line basic) string with the toml crate's escapes.
func writeBasic(b *strings.Builder, s string, multiline, newline bool) {
	delim, maxRun := `"`, 0
	if multiline {
		delim, maxRun = `"""`, 2
	}
	b.WriteString(delim)
	if multiline && newline {
		b.WriteByte('\n')
	}
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' {
			run++
			if run > maxRun {
				b.WriteString(`\"`)
				run = 0
				continue
			}
			b.WriteByte(c)
			continue
		}
		run = 0
		switch {
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\n' && !multiline:
			b.WriteString(`\n`)
		case c == '\f':
			b.WriteString(`\f`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\\':
			b.WriteString(`\\`)
		case c != '\n' && (c <= 0x1f || c == 0x7f):
			fmt.Fprintf(b, `\u%04X`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteString(delim)
}
