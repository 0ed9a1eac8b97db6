package superconfig

import (
	"errors"
	"strings"
	"testing"
)

const manualSAS = `
[provisioning]
source = "manual"
iothub_hostname = "hub.example"
device_id = "dev"

[provisioning.authentication]
method = "sas"
device_id_pk = { uri = "file:///var/secrets/dev.key" }
`

// Cases for super-config keys no vector covers, with expectations written from
// config.md §2.5 and §2.6. Empty want strings are not checked.
func TestApplyKeys(t *testing.T) {
	keydSAS := `[aziot_keys]
homedir_path = "/var/lib/aziot/keyd"

[preloaded_keys]
device-id = "file:///var/secrets/dev.key"

[[principal]]
uid = 5556
keys = ["aziot_identityd_master_id", "device-id"]
`
	certdEmpty := `homedir_path = "/var/lib/aziot/certd"

[cert_issuance]

[preloaded_certs]
`
	identitydSAS := func(top, prov string) string {
		return `hostname = "my-device"
homedir = "/var/lib/aziot/identityd"
prefer_module_identity_cache = false
` + top + `
[provisioning]
` + prov + `source = "manual"
iothub_hostname = "hub.example"
device_id = "dev"

[provisioning.authentication]
method = "sas"
device_id_pk = "device-id"
`
	}
	cases := []struct {
		name                         string
		in                           string
		keyd, certd, identityd, tpmd string
	}{
		{
			name: "explicit hostname, cloud timeout and retries",
			in: `hostname = "explicit.example"
cloud_timeout_sec = 100
cloud_retries = 3
` + manualSAS,
			keyd:  keydSAS,
			certd: certdEmpty,
			identityd: `hostname = "explicit.example"
homedir = "/var/lib/aziot/identityd"
prefer_module_identity_cache = false
cloud_timeout_sec = 100
cloud_retries = 3

[provisioning]
source = "manual"
iothub_hostname = "hub.example"
device_id = "dev"

[provisioning.authentication]
method = "sas"
device_id_pk = "device-id"
`,
		},
		{
			name:      "local gateway",
			in:        `local_gateway_hostname = "gw.local"` + "\n" + manualSAS,
			identityd: identitydSAS("", `local_gateway_hostname = "gw.local"`+"\n"),
		},
		{
			name:      "parent_hostname alias",
			in:        `parent_hostname = "gw.local"` + "\n" + manualSAS,
			identityd: identitydSAS("", `local_gateway_hostname = "gw.local"`+"\n"),
		},
		{
			name: "aziot_max_requests",
			in: manualSAS + `
[aziot_max_requests]
keyd = 20
certd = 30
tpmd = 40
identityd = 50
`,
			keyd:      "max_requests = 20\n\n" + keydSAS,
			certd:     "homedir_path = \"/var/lib/aziot/certd\"\nmax_requests = 30\n\n[cert_issuance]\n\n[preloaded_certs]\n",
			identityd: identitydSAS("max_requests = 50\n", ""),
			tpmd:      "max_requests = 40\n",
		},
		{
			name: "aziot_max_requests at defaults",
			in: manualSAS + `
[aziot_max_requests]
keyd = 10
certd = 10
tpmd = 10
identityd = 10
`,
			keyd: keydSAS, certd: certdEmpty, identityd: identitydSAS("", ""),
		},
		{
			name: "tpm",
			in: manualSAS + `
[tpm]
tcti = "swtpm:port=2321"
auth_key_index = 0x00_01_01

[tpm.hierarchy_authorization]
endorsement = "hello"
owner = "world"
`,
			tpmd: `tcti = "swtpm:port=2321"
auth_key_index = 257

[hierarchy_authorization]
endorsement = "hello"
owner = "world"
`,
		},
		{
			name: "tpm defaults",
			in:   manualSAS + "\n[tpm]\ntcti = \"device\"\nauth_key_index = 0x100\n",
			tpmd: "",
		},
		{
			name: "localid",
			in:   manualSAS + "\n[localid]\ndomain = \"example.local\"\n",
			identityd: identitydSAS("", "") + `
[localid]
domain = "example.local"
`,
		},
		{
			name: "source none",
			in:   "[provisioning]\nsource = \"none\"\n",
			keyd: `[aziot_keys]
homedir_path = "/var/lib/aziot/keyd"

[preloaded_keys]

[[principal]]
uid = 5556
keys = ["aziot_identityd_master_id"]
`,
			certd: certdEmpty,
			identityd: `hostname = "my-device"
homedir = "/var/lib/aziot/identityd"
prefer_module_identity_cache = false

[provisioning]
source = "none"
`,
		},
		{
			name: "dps payload",
			in: `[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net"
id_scope = "scope"
payload = { uri = "file:///var/secrets/payload.json" }

[provisioning.attestation]
method = "tpm"
registration_id = "reg"
`,
			identityd: `hostname = "my-device"
homedir = "/var/lib/aziot/identityd"
prefer_module_identity_cache = false

[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net/"
scope_id = "scope"

[provisioning.attestation]
method = "tpm"
registration_id = "reg"

[provisioning.payload]
uri = "file:///var/secrets/payload.json"
`,
		},
		{
			name: "local CA preloaded, device cert issued by it",
			in: `[provisioning]
source = "manual"
iothub_hostname = "hub.example"
device_id = "dev"

[provisioning.authentication]
method = "x509"
identity_cert = { method = "local_ca", common_name = "dev", expiry_days = 30 }

[cert_issuance.local_ca]
cert = "file:///var/secrets/local-ca.pem"
pk = "pkcs11:token=my%20token;object=local-ca"
`,
			keyd: `[aziot_keys]
homedir_path = "/var/lib/aziot/keyd"

[preloaded_keys]
local-ca = "pkcs11:token=my%20token;object=local%2Dca"

[[principal]]
uid = 5556
keys = ["aziot_identityd_master_id", "device-id"]

[[principal]]
uid = 5555
keys = ["local-ca"]
`,
			certd: `homedir_path = "/var/lib/aziot/certd"

[cert_issuance.local_ca]
cert = "local-ca"
pk = "local-ca"

[cert_issuance.device-id]
method = "local_ca"
expiry_days = 30
common_name = "dev"

[preloaded_certs]
local-ca = "file:///var/secrets/local-ca.pem"

[[principal]]
uid = 5556
certs = ["device-id"]
`,
			identityd: `hostname = "my-device"
homedir = "/var/lib/aziot/identityd"
prefer_module_identity_cache = false

[provisioning]
source = "manual"
iothub_hostname = "hub.example"
device_id = "dev"

[provisioning.authentication]
method = "x509"
identity_cert = "device-id"
identity_pk = "device-id"
`,
		},
		{
			name: "local CA issued, manual subject",
			in: `[provisioning]
source = "manual"
iothub_hostname = "hub.example"
device_id = "dev"

[provisioning.authentication]
method = "x509"

[provisioning.authentication.identity_cert]
method = "local_ca"
subject = { cn = "ignored", l = "AQ", ST = "Antarctica" }

[cert_issuance.local_ca.cert]
method = "self_signed"
expiry_days = 3650
common_name = "My Local CA"
`,
			keyd: `[aziot_keys]
homedir_path = "/var/lib/aziot/keyd"

[preloaded_keys]

[[principal]]
uid = 5556
keys = ["aziot_identityd_master_id", "device-id"]

[[principal]]
uid = 5555
keys = ["local-ca"]
`,
			certd: `homedir_path = "/var/lib/aziot/certd"

[cert_issuance.local_ca]
cert = "local-ca"
pk = "local-ca"

[cert_issuance.device-id]
method = "local_ca"

[cert_issuance.device-id.subject]
ST = "Antarctica"
cn = "ignored"
l = "AQ"

[cert_issuance.local-ca]
method = "self_signed"
expiry_days = 3650
common_name = "My Local CA"

[preloaded_certs]

[[principal]]
uid = 5556
certs = ["device-id"]
`,
			identityd: `hostname = "my-device"
homedir = "/var/lib/aziot/identityd"
prefer_module_identity_cache = false

[provisioning]
source = "manual"
iothub_hostname = "hub.example"
device_id = "dev"

[provisioning.authentication]
method = "x509"
identity_cert = "device-id"
identity_pk = "device-id"

[provisioning.authentication.csr_subject]
CN = "dev"
L = "AQ"
ST = "Antarctica"
`,
		},
		{
			name: "local CA issued by EST drops per-cert auth",
			in: manualSAS + `
[cert_issuance.local_ca.cert]
method = "est"
url = "https://est.example/.well-known/est"
username = "u"
password = "p"
identity_cert = "file:///var/secrets/est-id.pem"
identity_pk = "file:///var/secrets/est-id.key"
common_name = "ca"

[cert_issuance.local_ca.cert.auto_renew]
rotate_key = true
threshold = "50%"
retry = "10%"
`,
			keyd: `[aziot_keys]
homedir_path = "/var/lib/aziot/keyd"

[preloaded_keys]
device-id = "file:///var/secrets/dev.key"

[[principal]]
uid = 5556
keys = ["aziot_identityd_master_id", "device-id"]

[[principal]]
uid = 5555
keys = ["local-ca"]
`,
			certd: `homedir_path = "/var/lib/aziot/certd"

[cert_issuance.local_ca]
cert = "local-ca"
pk = "local-ca"

[cert_issuance.local-ca]
method = "est"
url = "https://est.example/.well-known/est"
common_name = "ca"

[preloaded_certs]
`,
		},
		{
			name: "global EST identity form, non-default renewal, no rotate",
			in: manualSAS + `
[cert_issuance.est]
trusted_certs = ["file:///a.pem", "file:///b.pem"]

[cert_issuance.est.auth]
bootstrap_identity_cert = "file:///var/secrets/boot.pem"
bootstrap_identity_pk = "file:///var/secrets/boot.key"

[cert_issuance.est.identity_auto_renew]
rotate_key = false
threshold = "2880min"
retry = "90min"
`,
			keyd: `[aziot_keys]
homedir_path = "/var/lib/aziot/keyd"

[preloaded_keys]
device-id = "file:///var/secrets/dev.key"
est-bootstrap-id = "file:///var/secrets/boot.key"

[[principal]]
uid = 5556
keys = ["aziot_identityd_master_id", "device-id"]

[[principal]]
uid = 5555
keys = ["est-bootstrap-id", "est-id"]
`,
			certd: `homedir_path = "/var/lib/aziot/certd"

[cert_issuance.est]
trusted_certs = ["est-server-ca-1", "est-server-ca-2"]
identity_cert = "est-id"
identity_pk = "est-id"
bootstrap_identity_cert = "est-bootstrap-id"
bootstrap_identity_pk = "est-bootstrap-id"

[cert_issuance.est.identity_auto_renew]
rotate_key = false
threshold = "2day"
retry = "90min"

[preloaded_certs]
est-bootstrap-id = "file:///var/secrets/boot.pem"
est-server-ca-1 = "file:///a.pem"
est-server-ca-2 = "file:///b.pem"
`,
		},
		{
			name: "preloaded certs and keys copied, aziot_keys overwritten",
			in: manualSAS + `
[aziot_keys]
homedir_path = "/elsewhere"
pkcs11_lib_path = "/usr/lib/p11.so"

[preloaded_keys]
other = "pkcs11:slot-id=3;token=ignored?pin-value=12%2034"

[preloaded_certs]
bundle = ["a", "b"]
one = "file:///x.pem"
`,
			keyd: `[aziot_keys]
homedir_path = "/var/lib/aziot/keyd"
pkcs11_lib_path = "/usr/lib/p11.so"

[preloaded_keys]
device-id = "file:///var/secrets/dev.key"
other = "pkcs11:slot-id=3?pin-value=12%2034"

[[principal]]
uid = 5556
keys = ["aziot_identityd_master_id", "device-id"]
`,
			certd: `homedir_path = "/var/lib/aziot/certd"

[cert_issuance]

[preloaded_certs]
bundle = ["a", "b"]
one = "file:///x.pem"
`,
		},
		{
			name: "broker table copied to every file",
			in: manualSAS + `
[broker]
policy_dir = "/etc/aziot/policy.d"
module_keys = ["file:///etc/aziot/k1.pem"]

[broker.flow_limits]
memory_mb = 64
`,
			tpmd: `[broker]
module_keys = ["file:///etc/aziot/k1.pem"]
policy_dir = "/etc/aziot/policy.d"

[broker.flow_limits]
memory_mb = 64
`,
			keyd: keydSAS + `
[broker]
module_keys = ["file:///etc/aziot/k1.pem"]
policy_dir = "/etc/aziot/policy.d"

[broker.flow_limits]
memory_mb = 64
`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("config.toml", []byte(tc.in))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			out, err := Apply(cfg, vectorEnv)
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			check := func(name, got, want string) {
				if want != "" && got != want {
					t.Errorf("%s:\n--- got ---\n%s--- want ---\n%s", name, got, want)
				}
			}
			check("keyd", string(out.Keyd), tc.keyd)
			check("certd", string(out.Certd), tc.certd)
			check("identityd", string(out.Identityd), tc.identityd)
			if tc.tpmd != "" || strings.HasPrefix(tc.name, "tpm defaults") {
				if string(out.Tpmd) != tc.tpmd {
					t.Errorf("tpmd:\n--- got ---\n%s--- want ---\n%s", out.Tpmd, tc.tpmd)
				}
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	cases := []struct {
		name string
		in   string
		env  Env
		want error
	}{
		{
			name: "DPS in nested mode",
			in: `local_gateway_hostname = "gw"
[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net/"
id_scope = "s"
[provisioning.attestation]
method = "tpm"
registration_id = "r"
`,
			env:  vectorEnv,
			want: ErrNestedDPS,
		},
		{
			name: "no hostname",
			in:   "[provisioning]\nsource = \"none\"\n",
			env:  Env{},
			want: ErrNoHostname,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("config.toml", []byte(tc.in))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			out, err := Apply(cfg, tc.env)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if out != nil {
				t.Errorf("output returned with an error")
			}
			if tc.want == ErrNestedDPS && err.Error() != "DPS provisioning is not supported in nested mode" {
				t.Errorf("message %q", err)
			}
		})
	}
}
