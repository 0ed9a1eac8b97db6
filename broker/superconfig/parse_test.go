package superconfig

import (
	"errors"
	"testing"
)

// Every parse error names the file, the line and the key.
func TestParseErrors(t *testing.T) {
	const dps = `[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net/"
id_scope = "s"

[provisioning.attestation]
`
	cases := []struct {
		name string
		in   string
		want string
	}{
		{"syntax", "hostname = \n", `/etc/aziot/config.toml:1: key "hostname": expected value but found '\n' instead`},
		{"unknown source", "[provisioning]\nsource = \"cloud\"\n",
			`/etc/aziot/config.toml:2: key "provisioning.source": unknown variant "cloud", expected one of "manual", "dps", "none"`},
		{"unknown attestation method", dps + "method = \"psk\"\nregistration_id = \"r\"\n",
			`/etc/aziot/config.toml:7: key "provisioning.attestation.method": unknown variant "psk", expected one of "symmetric_key", "x509", "tpm"`},
		{"unknown issuance method inline", dps + "method = \"x509\"\nidentity_cert = { method = \"acme\" }\n",
			`/etc/aziot/config.toml:8: key "provisioning.attestation.identity_cert.method": unknown variant "acme", expected one of "est", "local_ca", "self_signed"`},
		{"missing provisioning", "hostname = \"h\"\n", `/etc/aziot/config.toml: key "provisioning": missing required key`},
		{"missing registration_id", dps + "method = \"tpm\"\n",
			`/etc/aziot/config.toml:6: key "provisioning.attestation.registration_id": missing required key`},
		{"cloud timeout", "cloud_timeout_sec = 10\n[provisioning]\nsource = \"none\"\n",
			`/etc/aziot/config.toml:1: key "cloud_timeout_sec": cloud_timeout_sec must be at least 70 seconds`},
		{"wrong type", "cloud_retries = \"x\"\n[provisioning]\nsource = \"none\"\n",
			`/etc/aziot/config.toml:1: key "cloud_retries": expected an integer, found string`},
		{"partial max requests", "[provisioning]\nsource = \"none\"\n[aziot_max_requests]\nkeyd = 1\ncertd = 1\ntpmd = 1\n",
			`/etc/aziot/config.toml:3: key "aziot_max_requests.identityd": missing required key`},
		{"bad connection string", "[provisioning]\nsource = \"manual\"\nconnection_string = \"HostName=h;DeviceId=d\"\n",
			`/etc/aziot/config.toml:3: key "provisioning.connection_string": invalid connection string: required parameter "SharedAccessKey" is missing`},
		{"bad key uri", "[provisioning]\nsource = \"none\"\n[preloaded_keys]\nk = \"http://x\"\n",
			`/etc/aziot/config.toml:4: key "preloaded_keys.k": unsupported key URI "http://x": expected a file:// or pkcs11: URI`},
		{"pkcs11 without slot or token", "[provisioning]\nsource = \"none\"\n[preloaded_keys]\nk = \"pkcs11:object=x\"\n",
			`/etc/aziot/config.toml:4: key "preloaded_keys.k": invalid PKCS#11 URI "pkcs11:object=x": one of slot-id or token is required`},
		{"expiry days zero", dps + "method = \"x509\"\nidentity_cert = { method = \"local_ca\", expiry_days = 0 }\n",
			`/etc/aziot/config.toml:8: key "provisioning.attestation.identity_cert.expiry_days": expiry_days must be a positive integer, found 0`},
		{"bad renewal policy", dps + "method = \"x509\"\n[provisioning.attestation.identity_cert]\nmethod = \"est\"\n[provisioning.attestation.identity_cert.auto_renew]\nrotate_key = true\nthreshold = \"100%\"\nretry = \"4%\"\n",
			`/etc/aziot/config.toml:12: key "provisioning.attestation.identity_cert.auto_renew.threshold": invalid renewal policy "100%": expected "<1-99>%", "<N>min" or "<N>day"`},
		{"auth key index", "[provisioning]\nsource = \"none\"\n[tpm]\nauth_key_index = 0x800000\n",
			`/etc/aziot/config.toml:4: key "tpm.auth_key_index": persistent handle index cannot exceed 0x7F_FF_FF`},
		{"auth key index string", "[provisioning]\nsource = \"none\"\n[tpm]\nauth_key_index = \"0x00_01_00\"\n",
			`/etc/aziot/config.toml:4: key "tpm.auth_key_index": expected an integer, found string`},
		{"bad base64", "[provisioning]\nsource = \"manual\"\niothub_hostname = \"h\"\ndevice_id = \"d\"\n[provisioning.authentication]\nmethod = \"sas\"\ndevice_id_pk = { value = \"!!!\" }\n",
			`/etc/aziot/config.toml:7: key "provisioning.authentication.device_id_pk.value": invalid base64: illegal base64 data at input byte 0`},
		{"subject and common name", dps + "method = \"x509\"\nidentity_cert = { method = \"est\", common_name = \"a\", subject = { CN = \"b\" } }\n",
			`/etc/aziot/config.toml:8: key "provisioning.attestation.identity_cert.subject": common_name and subject are mutually exclusive`},
		{"both gateway names", "local_gateway_hostname = \"a\"\nparent_hostname = \"b\"\n[provisioning]\nsource = \"none\"\n",
			`/etc/aziot/config.toml:2: key "parent_hostname": duplicate field: local_gateway_hostname and its alias parent_hostname are both set`},
		{"bad url", "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"not a url\"\n",
			`/etc/aziot/config.toml:3: key "provisioning.global_endpoint": invalid URL "not a url": relative URL without a base`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("/etc/aziot/config.toml", []byte(tc.in))
			if err == nil {
				t.Fatalf("parsed: %+v", cfg)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %s\nwant %s", err, tc.want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("error is %T, want *Error", err)
			}
		})
	}
}

func TestParseInvalidUTF8(t *testing.T) {
	_, err := Parse("c.toml", []byte("hostname = \"\xff\"\n"))
	if !errors.Is(err, ErrInvalidCharacter) {
		t.Fatalf("err = %v", err)
	}
}

func TestConnectionString(t *testing.T) {
	cs, err := ParseConnectionString("GatewayHostName=g;HostName=h.example;DeviceId=d;SharedAccessKey=YWJj")
	if err != nil || cs.HostName != "h.example" || cs.DeviceID != "d" || string(cs.Key) != "abc" {
		t.Fatalf("got %+v, %v", cs, err)
	}
	for in, want := range map[string]string{
		"DeviceId=d;SharedAccessKey=YWJj":            `required parameter "HostName" is missing`,
		"HostName=h;SharedAccessKey=YWJj":            `required parameter "DeviceId" is missing`,
		"HostName=h;DeviceId=d":                      `required parameter "SharedAccessKey" is missing`,
		"hostname=h;DeviceId=d;SharedAccessKey=YWJj": `required parameter "HostName" is missing`,
	} {
		if _, err := ParseConnectionString(in); err == nil || err.Error() != want {
			t.Errorf("%q: err = %v, want %s", in, err, want)
		}
	}
	if _, err := ParseConnectionString("HostName=h;DeviceId=d;SharedAccessKey=@@"); err == nil {
		t.Error("bad base64 accepted")
	}
}

func TestCanonicalPolicy(t *testing.T) {
	for in, want := range map[string]string{"1%": "1%", "99%": "99%", "1440min": "1day", "61min": "61min", "3day": "3day", "007%": "7%"} {
		if got, err := canonicalPolicy(in); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"0%", "100%", "0min", "0day", "5", "-1day", "1.5day", "%", "day"} {
		if _, err := canonicalPolicy(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzParseApply checks that no input makes parsing or translation panic.
func FuzzParseApply(f *testing.F) {
	f.Add([]byte(manualSAS))
	f.Add([]byte("[provisioning]\nsource = \"none\"\n[broker]\na = [{b = 1}]\n"))
	f.Add([]byte("[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://x/\"\nid_scope = \"s\"\n[provisioning.attestation]\nmethod = \"x509\"\nregistration_id = \"r\"\nidentity_cert = { method = \"est\", subject = { cn = \"x\" }, auto_renew = { rotate_key = true, threshold = \"1%\", retry = \"1day\" } }\n[cert_issuance.est.auth]\nbootstrap_identity_cert = \"file:///b\"\nbootstrap_identity_pk = \"pkcs11:token=t\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.toml", data)
		if err != nil {
			return
		}
		_, _ = Apply(cfg, vectorEnv)
	})
}
