package identityd

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestValidate(t *testing.T) {
	base := `hostname = "h"
homedir = "/var/lib/aziot/identityd"
`
	manual := `[provisioning]
source = "manual"
iothub_hostname = "hub"
device_id = "d"
[provisioning.authentication]
method = "sas"
device_id_pk = "device-id"
`
	cases := []struct{ name, doc, want string }{
		{"ok manual", base + manual, ""},
		{"ok none", base + "[provisioning]\nsource = \"none\"\n", ""},
		{"ok dps x509 table registration id", base + "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g/\"\nscope_id = \"s\"\n[provisioning.attestation]\nmethod = \"x509\"\nidentity_cert = \"device-id\"\nidentity_pk = \"device-id\"\n[provisioning.attestation.registration_id]\nCN = \"x\"\n", ""},
		{"no hostname", "homedir = \"/h\"\n" + manual, "missing field `hostname`"},
		{"no provisioning", base, "missing field `provisioning`"},
		{"timeout", base + "cloud_timeout_sec = 5\n" + manual, "at least 70"},
		{"unknown source", base + "[provisioning]\nsource = \"x\"\n", "unknown source"},
		{"tpm no registration id", base + "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g/\"\nscope_id = \"s\"\n[provisioning.attestation]\nmethod = \"tpm\"\n", "registration_id"},
		{"duplicate principal", base + manual + "[[principal]]\nuid = 1\nname = \"a\"\n[[principal]]\nuid = 2\nname = \"a\"\n", "duplicate principal name"},
		{"local without localid", base + manual + "[[principal]]\nuid = 1\nname = \"a\"\nidtype = [\"local\"]\n", "[localid] is not configured"},
		{"localid opts without local", base + manual + "[localid]\ndomain = \"d\"\n[[principal]]\nuid = 1\nname = \"a\"\nidtype = [\"module\"]\nlocalid = { type = \"x509\", attributes = \"server\" }\n", "does not include local"},
		{"daemon with localid accepted", base + manual + "[[principal]]\nuid = 1\nname = \"a\"\nlocalid = { type = \"x509\" }\n", ""},
		{"none with module", base + "[provisioning]\nsource = \"none\"\n[[principal]]\nuid = 1\nname = \"a\"\nidtype = [\"module\"]\n", "provisioning source none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			if _, err := toml.Decode(tc.doc, &c); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
