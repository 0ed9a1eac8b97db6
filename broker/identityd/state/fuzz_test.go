package state

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDeviceInfo: decoding never panics; what decodes re-encodes to a file that decodes
// to the same value, and that encoding is a fixed point.
func FuzzDeviceInfo(f *testing.F) {
	f.Add([]byte("hub_name = \"h\"\nlocal_gateway_hostname = \"g\"\ndevice_id = \"d\"\n"))
	f.Add([]byte("hub_name = 'a\"b'\nlocal_gateway_hostname = \"\"\"\nx\"\"\"\ndevice_id = \"\\u0001\"\n"))
	f.Add([]byte("unprovisioned"))
	f.Add([]byte("hub_name = \"h\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := DecodeDeviceInfo(data)
		if err != nil {
			if errors.Is(err, ErrUnprovisioned) != bytes.Equal(data, []byte("unprovisioned")) {
				t.Fatalf("unprovisioned mismatch: %v", err)
			}
			return
		}
		enc, err := EncodeDeviceInfo(d)
		if err != nil {
			t.Fatalf("decoded value does not encode: %v", err)
		}
		back, err := DecodeDeviceInfo(enc)
		if err != nil || back != d {
			t.Fatalf("re-decode of %q: %+v, %v; want %+v", enc, back, err, d)
		}
		enc2, _ := EncodeDeviceInfo(back)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %q then %q", enc, enc2)
		}
	})
}

// FuzzDeviceInfoStrings: every valid UTF-8 value survives the toml crate's quoting
// rules (writeTOMLString) and our TOML reader.
func FuzzDeviceInfoStrings(f *testing.F) {
	f.Add("myhub.azure-devices.net", "gw", "dev'1")
	f.Add(`a"b`, `a\b`, "a'\"\n\\")
	f.Add(`"""'''`, "\x00\x7f\t\r", "é\u2028")
	f.Fuzz(func(t *testing.T, hub, gw, dev string) {
		d := DeviceInfo{HubName: hub, LocalGatewayHostname: gw, DeviceID: dev}
		enc, err := EncodeDeviceInfo(d)
		if err != nil {
			if utf8.ValidString(hub) && utf8.ValidString(gw) && utf8.ValidString(dev) {
				t.Fatalf("valid strings rejected: %v", err)
			}
			return
		}
		back, err := DecodeDeviceInfo(enc)
		if err != nil || back != d {
			t.Fatalf("round trip through %q: %+v, %v", enc, back, err)
		}
	})
}

// FuzzModule: decoding never panics; what decodes re-encodes to upstream's form, which
// decodes to the same value and is a fixed point of decode+encode.
func FuzzModule(f *testing.F) {
	f.Add([]byte(`{"moduleId":"m","deviceId":"d","generationId":"1"}`))
	f.Add([]byte(`{"moduleId":"m","managedBy":null,"deviceId":"d","authentication":{"type":"sas"}}`))
	f.Add([]byte(`{"moduleId":"\u00e9\n","deviceId":"<&>"}`))
	f.Add([]byte(`{"moduleId":"m"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeModule(data)
		if err != nil {
			return
		}
		enc, err := EncodeModule(m)
		if err != nil {
			t.Fatalf("decoded value does not encode: %v", err)
		}
		back, err := DecodeModule(enc)
		if err != nil || !reflect.DeepEqual(back, m) {
			t.Fatalf("re-decode of %s: %+v, %v; want %+v", enc, back, err, m)
		}
		enc2, _ := EncodeModule(back)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %s then %s", enc, enc2)
		}
	})
}

// FuzzPrevModules: decoding never panics; the set it yields, written back as a minimal
// principal list, decodes to the same set.
func FuzzPrevModules(f *testing.F) {
	f.Add([]byte(prevSettings))
	f.Add([]byte("[[principal]]\nuid = 1\nname = \"m\"\nidtype = [\"module\"]\n"))
	f.Add([]byte("[[principal]]\nuid = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		mods, err := DecodePrevModules(data)
		if err != nil {
			return
		}
		names := make([]string, 0, len(mods))
		for n := range mods {
			names = append(names, n)
		}
		slices.Sort(names)
		var b strings.Builder
		for i, n := range names {
			b.WriteString("[[principal]]\nuid = " + strconv.Itoa(i) + "\nname = ")
			writeTOMLString(&b, n)
			b.WriteString("\nidtype = [\"module\"]\n")
		}
		back, err := DecodePrevModules([]byte(b.String()))
		if err != nil || !reflect.DeepEqual(back, mods) {
			t.Fatalf("re-decode of %q: %v, %v; want %v", b.String(), back, err, mods)
		}
	})
}
