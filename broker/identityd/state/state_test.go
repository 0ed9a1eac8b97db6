package state

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func ptr(s string) *string { return &s }

func TestPaths(t *testing.T) {
	const (
		hub = "7d4a2c5ea3b698a673926d4ebb8c0d2034c367424a491480224fbd729008150e" // sha256("myhub.azure-devices.net")
		dev = "8e283fbd277154eac89a8627d2d6c90efdc4490bec2a68e1151202da69a73673" // sha256("device01")
	)
	if got, want := DeviceInfoPath("/var/lib/aziot/identityd"), "/var/lib/aziot/identityd/device_info"; got != want {
		t.Errorf("DeviceInfoPath = %q, want %q", got, want)
	}
	if got, want := PrevStatePath("/var/lib/aziot/identityd"), "/var/lib/aziot/identityd/prev_state"; got != want {
		t.Errorf("PrevStatePath = %q, want %q", got, want)
	}
	dir := DeviceModulesDir("/h", "myhub.azure-devices.net", "device01")
	if want := "/h/modules/" + hub + "-" + dev; dir != want {
		t.Errorf("DeviceModulesDir = %q, want %q", dir, want)
	}
	for _, tc := range []struct{ id, name string }{
		{"module01", "module01-d39924f0eda7f7712fc98b569c17eac54723158ed5f2c33909a82b96c732af8e"},
		{"my-module.1", "mymodule1-ebdf0df72a62bbe170786d773086880cd9cc1ca80627c6229b89975e9d3d57a6"},
		{"", "-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	} {
		if got, want := ModulePath("/h", "myhub.azure-devices.net", "device01", tc.id), dir+"/"+tc.name; got != want {
			t.Errorf("ModulePath(%q) = %q, want %q", tc.id, got, want)
		}
	}
}

func TestDeviceInfoGolden(t *testing.T) {
	d := DeviceInfo{HubName: "myhub.azure-devices.net", LocalGatewayHostname: "gateway.local", DeviceID: "device01"}
	want := "hub_name = \"myhub.azure-devices.net\"\nlocal_gateway_hostname = \"gateway.local\"\ndevice_id = \"device01\"\n"
	got, err := EncodeDeviceInfo(d)
	if err != nil || string(got) != want {
		t.Fatalf("EncodeDeviceInfo = %q, %v; want %q", got, err, want)
	}
	back, err := DecodeDeviceInfo(got)
	if err != nil || back != d {
		t.Fatalf("DecodeDeviceInfo = %+v, %v", back, err)
	}
}

// The quoting the toml crate's default string builder picks, case by case.
func TestTOMLStringForms(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", `"plain"`},
		{"", `""`},
		{"it's", `"it's"`},
		{`a"b`, `'a"b'`},
		{`a\b`, `'a\b'`},
		{`a'b"`, `"""a'b""""`},
		{`a'\b`, `'''a'\b'''`},
		{"tab\there", "\"tab\\there\""},
		{"a\nb", "\"\"\"\na\nb\"\"\""},
		{"a\x01b", `"a\u0001b"`},
		{"a\x7f'\\", `"a\u007F'\\"`},
		{`''''\`, `"''''\\"`},
		{`"""'''\`, `"\"\"\"'''\\"`},
		{"\"\"\"\"'''\\\n", "\"\"\"\n\"\"\\\"\"'''\\\\\n\"\"\""},
		{"\r\b\f", `"\r\b\f"`},
	} {
		var b strings.Builder
		writeTOMLString(&b, tc.in)
		if b.String() != tc.want {
			t.Errorf("writeTOMLString(%q) = %s, want %s", tc.in, b.String(), tc.want)
		}
		// Whatever the form, it must read back as the same string.
		d := DeviceInfo{HubName: tc.in, LocalGatewayHostname: "g", DeviceID: "d"}
		data, err := EncodeDeviceInfo(d)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := DecodeDeviceInfo(data); err != nil || back != d {
			t.Errorf("round trip of %q through %q: %+v, %v", tc.in, data, back, err)
		}
	}
}

func TestDecodeDeviceInfoErrors(t *testing.T) {
	if _, err := DecodeDeviceInfo([]byte("unprovisioned")); !errors.Is(err, ErrUnprovisioned) {
		t.Errorf("unprovisioned: %v", err)
	}
	if string(EncodeUnprovisioned()) != "unprovisioned" {
		t.Error("EncodeUnprovisioned")
	}
	full := "hub_name = \"h\"\nlocal_gateway_hostname = \"g\"\ndevice_id = \"d\"\n"
	for name, in := range map[string]string{
		"empty":             "",
		"unprovisioned+nl":  "unprovisioned\n",
		"truncated":         full[:len(full)-6],
		"missing device_id": "hub_name = \"h\"\nlocal_gateway_hostname = \"g\"\n",
		"missing gateway":   "hub_name = \"h\"\ndevice_id = \"d\"\n",
		"not a string":      "hub_name = 1\nlocal_gateway_hostname = \"g\"\ndevice_id = \"d\"\n",
		"bad utf8":          "hub_name = \"\xff\"\nlocal_gateway_hostname = \"g\"\ndevice_id = \"d\"\n",
		"garbage":           "\x00\x01{",
	} {
		if _, err := DecodeDeviceInfo([]byte(in)); err == nil || !strings.Contains(err.Error(), "device_info") {
			t.Errorf("%s: err = %v, want a device_info error", name, err)
		}
	}
	// Unknown keys are ignored, as serde does.
	if d, err := DecodeDeviceInfo([]byte(full + "extra = 1\n")); err != nil || d.DeviceID != "d" {
		t.Errorf("extra key: %+v, %v", d, err)
	}
	if _, err := EncodeDeviceInfo(DeviceInfo{HubName: "\xff"}); err == nil {
		t.Error("EncodeDeviceInfo accepted invalid UTF-8")
	}
}

func TestDeviceInfoFile(t *testing.T) {
	home := t.TempDir()
	if _, err := ReadDeviceInfo(home); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	d := DeviceInfo{HubName: "h.azure-devices.net", LocalGatewayHostname: "h.azure-devices.net", DeviceID: "dev"}
	if err := WriteDeviceInfo(home, d); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(DeviceInfoPath(home))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("stat: %v %v", st, err)
	}
	if got, err := ReadDeviceInfo(home); err != nil || got != d {
		t.Fatalf("ReadDeviceInfo = %+v, %v", got, err)
	}
	if err := RemoveDeviceInfo(home); err != nil {
		t.Fatal(err)
	}
	if err := RemoveDeviceInfo(home); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := ReadDeviceInfo(home); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after remove: %v", err)
	}
}

func TestModuleGolden(t *testing.T) {
	for _, tc := range []struct {
		m    Module
		want string
	}{
		{Module{ModuleID: "module01", DeviceID: "device01", GenerationID: ptr("637871929016215046")},
			`{"moduleId":"module01","deviceId":"device01","generationId":"637871929016215046"}`},
		{Module{ModuleID: "m", ManagedBy: ptr("IotEdge"), DeviceID: "d", GenerationID: ptr("")},
			`{"moduleId":"m","managedBy":"IotEdge","deviceId":"d","generationId":""}`},
		{Module{ModuleID: "m", DeviceID: "d"}, `{"moduleId":"m","deviceId":"d"}`},
		// serde_json escapes: no HTML escaping, lowercase \u00xx, DEL and U+2028 raw.
		{Module{ModuleID: "<a&b>\"\\\n\r\t\b\f\x01\x1f\x7f\u2028é", DeviceID: "d"},
			"{\"moduleId\":\"<a&b>\\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u001f\x7f\u2028é\",\"deviceId\":\"d\"}"},
	} {
		got, err := EncodeModule(tc.m)
		if err != nil || string(got) != tc.want {
			t.Errorf("EncodeModule(%+v) = %s, %v; want %s", tc.m, got, err, tc.want)
			continue
		}
		back, err := DecodeModule(got)
		if err != nil || !reflect.DeepEqual(back, tc.m) {
			t.Errorf("DecodeModule(%s) = %+v, %v", got, back, err)
		}
	}
}

func TestDecodeModule(t *testing.T) {
	// What the Hub returns may be cached verbatim by older tools: extra keys are ignored,
	// null optional fields are absent.
	m, err := DecodeModule([]byte(`{"moduleId":"m","deviceId":"d","managedBy":null,"generationId":"g","authentication":{"type":"sas"}}`))
	if err != nil || m.ModuleID != "m" || m.ManagedBy != nil || m.GenerationID == nil || *m.GenerationID != "g" {
		t.Fatalf("DecodeModule = %+v, %v", m, err)
	}
	good := `{"moduleId":"m","deviceId":"d"}`
	for name, in := range map[string]string{
		"empty":            "",
		"truncated":        good[:len(good)-3],
		"null":             "null",
		"array":            "[]",
		"missing module":   `{"deviceId":"d"}`,
		"null device":      `{"moduleId":"m","deviceId":null}`,
		"wrong case":       `{"moduleid":"m","deviceId":"d"}`,
		"number":           `{"moduleId":1,"deviceId":"d"}`,
		"bad generation":   `{"moduleId":"m","deviceId":"d","generationId":true}`,
		"bad utf8":         "{\"moduleId\":\"\xff\",\"deviceId\":\"d\"}",
		"trailing garbage": good + "x",
	} {
		if _, err := DecodeModule([]byte(in)); err == nil || !strings.Contains(err.Error(), "module record") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestModuleCache(t *testing.T) {
	home := t.TempDir()
	c := ModuleCache{Homedir: home, Hub: "hub1.azure-devices.net", DeviceID: "dev1"}
	if err := c.SetDevice(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(c.Dir()); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir: %v %v", st, err)
	}
	a := Module{ModuleID: "a", DeviceID: "dev1", GenerationID: ptr("1")}
	b := Module{ModuleID: "b-1", ManagedBy: ptr("x"), DeviceID: "dev1", GenerationID: ptr("2")}
	for _, m := range []Module{a, b} {
		if err := c.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := c.Read("b-1"); err != nil || !reflect.DeepEqual(got, b) {
		t.Fatalf("Read = %+v, %v", got, err)
	}
	if _, err := c.Read("zzz"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read missing: %v", err)
	}
	// A subdirectory and an interrupted temp file are not records.
	os.Mkdir(filepath.Join(c.Dir(), "sub"), 0o700)
	os.WriteFile(filepath.Join(c.Dir(), ".a-x.tmp-1"), []byte("{"), 0o600)
	list, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, m := range list {
		ids = append(ids, m.ModuleID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"a", "b-1"}) {
		t.Fatalf("List = %v", ids)
	}
	// SetDevice again for the same device keeps the records.
	if err := c.SetDevice(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read("a"); err != nil {
		t.Fatalf("same device lost its cache: %v", err)
	}
	if err := c.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove("a"); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	// A corrupt record fails the list with the file named, and Read of it errors.
	os.WriteFile(ModulePath(home, c.Hub, c.DeviceID, "b-1"), []byte(`{"moduleId":"b-1","devi`), 0o600)
	if _, err := c.List(); err == nil || !strings.Contains(err.Error(), "b1-") {
		t.Fatalf("List with a corrupt record: %v", err)
	}
	if _, err := c.Read("b-1"); err == nil {
		t.Fatal("Read of a corrupt record succeeded")
	}

	// Another hub (or device): the whole modules directory goes (flows.md §9).
	c.Write(a)
	c2 := ModuleCache{Homedir: home, Hub: "hub2.azure-devices.net", DeviceID: "dev1"}
	if err := c2.SetDevice(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("old hub's cache survived: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(home, ModulesDir))
	if len(entries) != 1 || entries[0].Name() != filepath.Base(c2.Dir()) {
		t.Fatalf("modules dir: %v", entries)
	}
	c2.Write(a)
	if err := c2.Clear(); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.List(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("List after Clear: %v", err)
	}
	// Write recreates a cleared directory.
	if err := c2.Write(a); err != nil {
		t.Fatal(err)
	}
}

func TestDerivationData(t *testing.T) {
	if got, want := string(PrimaryDerivationData("module01", "637871929016215046")), "module01:637871929016215046:primary"; got != want {
		t.Errorf("primary = %q, want %q", got, want)
	}
	if got, want := string(SecondaryDerivationData("module01", "637871929016215046")), "module01:637871929016215046:secondary"; got != want {
		t.Errorf("secondary = %q, want %q", got, want)
	}
	// UTF-8 bytes, not some other encoding.
	if got := PrimaryDerivationData("é", ""); !slices.Equal(got, []byte{0xc3, 0xa9, ':', ':', 'p', 'r', 'i', 'm', 'a', 'r', 'y'}) {
		t.Errorf("primary of é = %x", got)
	}
	if MasterKeyID != "aziot_identityd_master_id" || MasterKeyUsage != "derive,sign" {
		t.Error("master key constants changed")
	}
}

func TestDeriveModuleKeys(t *testing.T) {
	type call struct{ base, data string }
	var calls []call
	derive := func(_ context.Context, base string, data []byte) (string, error) {
		calls = append(calls, call{base, string(data)})
		return "h(" + string(data) + ")", nil
	}
	ctx := context.Background()
	got, err := DeriveModuleKeys(ctx, derive, "MASTER", "m1", ptr("42"))
	if err != nil {
		t.Fatal(err)
	}
	if got != (ModuleKeyHandles{Primary: "h(m1:42:primary)", Secondary: "h(m1:42:secondary)"}) {
		t.Fatalf("handles = %+v", got)
	}
	if !slices.Equal(calls, []call{{"MASTER", "m1:42:primary"}, {"MASTER", "m1:42:secondary"}}) {
		t.Fatalf("calls = %v", calls)
	}
	if p, err := DerivePrimaryKey(ctx, derive, "MASTER", "m1", ptr("42")); err != nil || p != "h(m1:42:primary)" {
		t.Fatalf("DerivePrimaryKey = %q, %v", p, err)
	}
	if _, err := DeriveModuleKeys(ctx, derive, "MASTER", "m1", nil); !errors.Is(err, ErrNoGenerationID) {
		t.Fatalf("nil generation: %v", err)
	}
	if _, err := DerivePrimaryKey(ctx, derive, "MASTER", "m1", nil); !errors.Is(err, ErrNoGenerationID) {
		t.Fatalf("nil generation: %v", err)
	}
	boom := errors.New("keyd down")
	fail := func(context.Context, string, []byte) (string, error) { return "", boom }
	if _, err := DeriveModuleKeys(ctx, fail, "SECRETHANDLE", "m1", ptr("1")); !errors.Is(err, boom) || strings.Contains(err.Error(), "SECRETHANDLE") {
		t.Fatalf("derive error: %v", err)
	}
}

const prevSettings = `hostname = "host"
homedir = "/var/lib/aziot/identityd"
prefer_module_identity_cache = false

[provisioning]
source = "manual"
iothub_hostname = "hub.azure-devices.net"
device_id = "dev"

[provisioning.authentication]
method = "sas"
device_id_pk = "device-id"

[[principal]]
uid = 0
name = "daemon"

[[principal]]
uid = 1000
name = "m1"
idtype = ["module"]

[[principal]]
uid = 1001
name = "both"
idtype = ["device", "module", "local"]

[[principal]]
uid = 1002
name = "loc"
idtype = ["local"]
localid = { type = "x509", attributes = "server" }

[localid]
domain = "example.com"
`

func TestDecodePrevModules(t *testing.T) {
	got, err := DecodePrevModules([]byte(prevSettings))
	if err != nil || !reflect.DeepEqual(got, map[string]bool{"m1": true, "both": true}) {
		t.Fatalf("DecodePrevModules = %v, %v", got, err)
	}
	if got, err := DecodePrevModules([]byte("hostname = \"h\"\n")); err != nil || len(got) != 0 {
		t.Fatalf("no principals: %v, %v", got, err)
	}
	for name, in := range map[string]string{
		"truncated":   prevSettings[:len(prevSettings)/2],
		"no uid":      "[[principal]]\nname = \"m\"\n",
		"neg uid":     "[[principal]]\nuid = -1\nname = \"m\"\n",
		"no name":     "[[principal]]\nuid = 1\n",
		"bad idtype":  "[[principal]]\nuid = 1\nname = \"m\"\nidtype = [\"modules\"]\n",
		"not a table": "principal = 3\n",
		"bad utf8":    "hostname = \"\xff\"\n",
	} {
		if _, err := DecodePrevModules([]byte(in)); err == nil || !strings.Contains(err.Error(), "prev_state") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestPrevModules(t *testing.T) {
	home := t.TempDir()
	cur := DeviceInfo{HubName: "hub.azure-devices.net", LocalGatewayHostname: "hub.azure-devices.net", DeviceID: "dev"}
	want := map[string]bool{"m1": true, "both": true}
	check := func(step string, wantSet map[string]bool, wantErr bool) {
		t.Helper()
		got, err := PrevModules(home, cur)
		if got == nil || !reflect.DeepEqual(got, wantSet) || (err != nil) != wantErr {
			t.Errorf("%s: PrevModules = %v, %v", step, got, err)
		}
	}
	check("nothing written", map[string]bool{}, true)
	if err := WriteReconciled(home, cur, []byte(prevSettings)); err != nil {
		t.Fatal(err)
	}
	check("same device", want, false)
	for _, other := range []DeviceInfo{
		{HubName: "other.azure-devices.net", LocalGatewayHostname: cur.LocalGatewayHostname, DeviceID: cur.DeviceID},
		{HubName: cur.HubName, LocalGatewayHostname: "gw", DeviceID: cur.DeviceID},
		{HubName: cur.HubName, LocalGatewayHostname: cur.LocalGatewayHostname, DeviceID: "dev2"},
	} {
		if got, err := PrevModules(home, other); len(got) != 0 || err != nil {
			t.Errorf("changed device %+v: %v, %v", other, got, err)
		}
	}
	os.WriteFile(DeviceInfoPath(home), EncodeUnprovisioned(), 0o600)
	check("unprovisioned device_info", map[string]bool{}, true)
	WriteDeviceInfo(home, cur)
	os.WriteFile(PrevStatePath(home), []byte("[[principal]\n"), 0o600)
	check("corrupt prev_state", map[string]bool{}, true)
	WritePrevState(home, []byte(prevSettings))
	RemoveDeviceInfo(home)
	check("no device_info", map[string]bool{}, true)
}
