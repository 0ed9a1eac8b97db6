package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/iotbroker/aziot/broker/superconfig"
)

// vectorsDir is upstream's config-apply vectors in the repo's testdata (tests run in the
// package directory).
const vectorsDir = "../../testdata/vectors/config-apply"

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return nil
	})
	sort.Strings(names)
	return names
}

// The CLI's dry run reproduces every vector without root, users or a real hostname.
func TestConfigApplyDryRunVectors(t *testing.T) {
	entries, err := os.ReadDir(vectorsDir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		n++
		t.Run(e.Name(), func(t *testing.T) {
			a, _, stderr := testApp(t)
			a.geteuid = func() int { return 1000 }
			a.lookupUser = func(string) (uint32, uint32, error) { return 0, 0, errors.New("no users here") }
			a.hostname = func() (string, error) { return "wrong-host", nil }
			out := t.TempDir()
			code := run(a, []string{"config", "apply", "-c", filepath.Join(vectorsDir, e.Name(), "config.toml"),
				"--dry-run", out, "--hostname", "my-device", "--uid", "aziotcs=5555", "--uid", "aziotid=5556"})
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			want := []string{}
			for _, f := range []string{"certd.toml", "device-id", "identityd.toml", "keyd.toml", "tpmd.toml"} {
				exp, err := os.ReadFile(filepath.Join(vectorsDir, e.Name(), f))
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				want = append(want, f)
				got, err := os.ReadFile(filepath.Join(out, f))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, exp) {
					t.Errorf("%s differs:\n%s", f, got)
				}
			}
			if got := listDir(t, out); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("dry-run dir holds %v, want %v", got, want)
			}
			if _, err := os.Stat(a.paths.Etc); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("dry run touched %s", a.paths.Etc)
			}
		})
	}
	if n == 0 {
		t.Fatal("no vectors")
	}
}

func ownerMode(t *testing.T, p string) (uint32, os.FileMode) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Uid, st.Mode().Perm()
}

// The real path writes each service's 00-super.toml and the device key with the
// owners and modes of cli.md §3.
func TestConfigApplyWrites(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns files to the service users: run the suite as root, as CI does")
	}
	a, stdout, stderr := testApp(t)
	cfgPath := filepath.Join(vectorsDir, "manual-symmetric-key", "config.toml")
	if code := run(a, []string{"config", "apply", "-c", cfgPath}); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	keyPath := filepath.Join(a.paths.Secrets, "keyd", "device-id")
	wantOut := "Note: Symmetric key will be written to " + keyPath + "\n" +
		"Azure IoT Identity Service has been configured successfully!\n\n" +
		"Restarting service for configuration to take effect...\n(restarted)\nDone.\n"
	if stdout.String() != wantOut {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, wantOut)
	}
	for svc, uid := range map[string]uint32{"keyd": 5554, "certd": 5555, "identityd": 5556, "tpmd": 5557} {
		p := filepath.Join(a.paths.Etc, svc, "config.d", "00-super.toml")
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		exp, _ := os.ReadFile(filepath.Join(vectorsDir, "manual-symmetric-key", svc+".toml"))
		if string(got) != superconfig.Header+string(exp) {
			t.Errorf("%s:\n%s", p, got)
		}
		if o, m := ownerMode(t, p); o != uid || m != 0o600 {
			t.Errorf("%s: owner %d mode %o", p, o, m)
		}
		if o, m := ownerMode(t, filepath.Dir(p)); o != uid || m != 0o700 {
			t.Errorf("%s: owner %d mode %o", filepath.Dir(p), o, m)
		}
		if names := listDir(t, filepath.Dir(p)); len(names) != 1 {
			t.Errorf("leftover files in %s: %v", filepath.Dir(p), names)
		}
	}
	key, _ := os.ReadFile(keyPath)
	if string(key) != "aziot-identity-service|aziot-ide" {
		t.Errorf("device key %q", key)
	}
	if o, m := ownerMode(t, keyPath); o != 5554 || m != 0o600 {
		t.Errorf("key: owner %d mode %o", o, m)
	}
	if o, m := ownerMode(t, filepath.Dir(keyPath)); o != 5554 || m != 0o700 {
		t.Errorf("key dir: owner %d mode %o", o, m)
	}
	// Applying again replaces the files.
	if code := run(a, []string{"config", "apply", "-c", filepath.Join(vectorsDir, "dps-tpm", "config.toml")}); code != 0 {
		t.Fatalf("second apply: exit %d: %s", code, stderr)
	}
	got, _ := os.ReadFile(filepath.Join(a.paths.Etc, "identityd", "config.d", "00-super.toml"))
	if !strings.Contains(string(got), `method = "tpm"`) {
		t.Errorf("not replaced:\n%s", got)
	}
}

// Errors name the file, line and key, exit non-zero, and write nothing.
func TestConfigApplyErrorsWriteNothing(t *testing.T) {
	cases := []struct {
		name, config string
		args         []string
		want         string
	}{
		{"syntax", "[provisioning]\nsource = \"manual\n", nil, `config.toml:2: key "provisioning.source"`},
		{"unknown method", "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g/\"\nid_scope = \"s\"\n[provisioning.attestation]\nmethod = \"magic\"\n",
			nil, `config.toml:6: key "provisioning.attestation.method": unknown variant "magic"`},
		{"nested dps", "local_gateway_hostname = \"gw\"\n[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g/\"\nid_scope = \"s\"\n[provisioning.attestation]\nmethod = \"symmetric_key\"\nregistration_id = \"r\"\nsymmetric_key = { value = \"YWJj\" }\n",
			nil, "DPS provisioning is not supported in nested mode"},
		{"not root", "[provisioning]\nsource = \"none\"\n", []string{"--not-root"}, "this command must be run as root"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, stdout, stderr := testApp(t)
			dir := t.TempDir()
			p := filepath.Join(dir, "config.toml")
			os.WriteFile(p, []byte(tc.config), 0o600)
			args := []string{"config", "apply", "-c", p}
			if len(tc.args) > 0 {
				a.geteuid = func() int { return 1000 }
			}
			if code := run(a, args); code != 1 {
				t.Errorf("exit %d", code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q lacks %q", stderr, tc.want)
			}
			if tc.name != "not root" && !strings.Contains(stderr.String(), p) && tc.name != "nested dps" {
				t.Errorf("stderr %q does not name the file", stderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q", stdout)
			}
			for _, d := range []string{a.paths.Etc, a.paths.Secrets} {
				if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was created", d)
				}
			}
			if tc.name == "not root" {
				return // a dry run needs no root
			}
			// The dry run writes nothing either.
			out := t.TempDir()
			run(a, append(args, "--dry-run", out))
			if names := listDir(t, out); len(names) != 0 {
				t.Errorf("dry run wrote %v", names)
			}
		})
	}
}

func TestConfigMP(t *testing.T) {
	a, stdout, stderr := testApp(t)
	out := filepath.Join(t.TempDir(), "config.toml")
	cs := "HostName=hub.example;DeviceId=dev;SharedAccessKey=YWJjZA"
	if code := run(a, []string{"config", "mp", "-c", cs, "-o", out}); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	data, _ := os.ReadFile(out)
	want := "[provisioning]\nsource = \"manual\"\nconnection_string = \"" + cs + "\"\n"
	if string(data) != want {
		t.Errorf("wrote %q", data)
	}
	if _, m := ownerMode(t, out); m != 0o600 {
		t.Errorf("mode %o", m)
	}
	if !strings.Contains(stdout.String(), "sudo aziotctl config apply -c '"+out+"'") || !strings.Contains(stdout.String(), out) {
		t.Errorf("stdout %q", stdout)
	}
	// The written file applies.
	cfg, err := superconfig.Parse(out, data)
	if err != nil || cfg.Provisioning.DeviceID != "dev" {
		t.Fatalf("parse back: %v", err)
	}

	stderr.Reset()
	if code := run(a, []string{"config", "mp", "-c", cs, "-o", out}); code != 1 {
		t.Errorf("existing file: exit %d", code)
	}
	if !strings.Contains(stderr.String(), "already exists") || !strings.Contains(stderr.String(), "sudo aziotctl config mp --force") {
		t.Errorf("stderr %q", stderr)
	}
	if code := run(a, []string{"config", "mp", "-c", "HostName=h;DeviceId=d;SharedAccessKey=YQ==", "-o", out, "-f"}); code != 0 {
		t.Errorf("--force: exit %d", code)
	}
	for bad, msg := range map[string]string{
		"HostName=h;DeviceId=d":                     `required parameter "SharedAccessKey" is missing`,
		"DeviceId=d;SharedAccessKey=YQ":             `required parameter "HostName" is missing`,
		"HostName=h;DeviceId=d;SharedAccessKey=%%%": "could not be decoded from base64",
	} {
		stderr.Reset()
		p := filepath.Join(t.TempDir(), "c.toml")
		if code := run(a, []string{"config", "mp", "-c", bad, "-o", p}); code != 1 {
			t.Errorf("%q: exit %d", bad, code)
		}
		if !strings.Contains(stderr.String(), "invalid connection string") || !strings.Contains(stderr.String(), msg) {
			t.Errorf("%q: stderr %q", bad, stderr)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%q: file written", bad)
		}
	}
}

func TestUsageAndVersion(t *testing.T) {
	a, stdout, _ := testApp(t)
	if code := run(a, []string{"--version"}); code != 0 || stdout.String() != "aziotctl 1.6.0\n" {
		t.Errorf("--version: %d %q", code, stdout)
	}
	for _, args := range [][]string{{"--bogus"}, {"config", "apply", "--nope"}, {"nosuch"}, {"config", "apply", "--uid", "x"}, {"config", "mp"}} {
		a, _, _ := testApp(t)
		if code := run(a, args); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	a, stdout, _ = testApp(t)
	if code := run(a, []string{"completion", "bash"}); code != 0 || !strings.Contains(stdout.String(), "aziotctl") {
		t.Errorf("completion: %d", code)
	}
}
