package daemon

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/internal/atomicfile"
)

// DevMaxRequests is the max_requests of the dev mode's default configs: upstream's 10.
const DevMaxRequests = 10

// DevUnits lays out a user-space state directory (DIR/run, DIR/etc/<svc>, DIR/lib/<svc>,
// DIR/etc/policy.d, DIR/lib/policy for installed bundles, DIR/lib/<svc>/policy for the
// policy status), writes each service's default config.toml when absent, and returns
// the units. Tests may drop their own DIR/etc/<svc>/config.d files before start.
func DevUnits(dir string) ([]Unit, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	uid := os.Getuid()
	run := filepath.Join(dir, "run")
	common := func(svc string) string {
		return fmt.Sprintf("\n[broker]\npolicy_dir = %q\npolicy_bundle_dir = %q\npolicy_state_dir = %q\nconfig_reload_debounce_ms = 1000\n",
			filepath.Join(dir, "etc", "policy.d"), filepath.Join(dir, "lib", "policy"), filepath.Join(dir, "lib", svc, "policy"))
	}
	hostname, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("hostname: %w", err)
	}
	sock := func(svc string) string { return "unix://" + filepath.Join(run, svc+".sock") }
	// The dev user owns every key and cert, as root would on a device.
	defaults := map[string]string{
		"keyd": fmt.Sprintf("max_requests = %d\n\n[aziot_keys]\nhomedir_path = %q\n\n[preloaded_keys]\n\n[[principal]]\nuid = %d\nkeys = [\"*\"]\n",
			DevMaxRequests, filepath.Join(dir, "lib", "keyd"), uid) + common("keyd"),
		"certd": fmt.Sprintf("homedir_path = %q\nmax_requests = %d\n\n[cert_issuance]\n\n[preloaded_certs]\n\n[endpoints]\naziot_keyd = %q\n\n[[principal]]\nuid = %d\ncerts = [\"*\"]\n",
			filepath.Join(dir, "lib", "certd"), DevMaxRequests, "unix://"+filepath.Join(run, "keyd.sock"), uid) + common("certd"),
		// No principals: the dev user is LocalRoot when it is root, as upstream. A config.d
		// file's [provisioning] replaces source = "none" (its keys override the default's).
		"identityd": fmt.Sprintf("hostname = %q\nhomedir = %q\nmax_requests = %d\n\n[provisioning]\nsource = \"none\"\n\n[endpoints]\naziot_certd = %q\naziot_identityd = %q\naziot_keyd = %q\naziot_tpmd = %q\n",
			hostname, filepath.Join(dir, "lib", "identityd"), DevMaxRequests, sock("certd"), sock("identityd"), sock("keyd"), sock("tpmd")) + common("identityd"),
	}
	for _, d := range []string{run, filepath.Join(dir, "etc", "policy.d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	var units []Unit
	for _, u := range []Unit{Keyd(), Certd(), Identityd()} {
		etc := filepath.Join(dir, "etc", u.Name)
		for _, d := range []string{filepath.Join(etc, "config.d"), filepath.Join(dir, "lib", u.Name)} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, err
			}
		}
		u.ConfigFile = filepath.Join(etc, "config.toml")
		u.ConfigDir = filepath.Join(etc, "config.d")
		u.Socket = filepath.Join(run, u.Name+".sock")
		svc := u.Name
		u.PolicyDefaults = func(s *broker.Settings) {
			if s.PolicyDir == "" {
				s.PolicyDir = filepath.Join(dir, "etc", "policy.d")
			}
			if s.PolicyBundleDir == "" {
				s.PolicyBundleDir = filepath.Join(dir, "lib", "policy")
			}
			if s.PolicyStateDir == "" {
				s.PolicyStateDir = filepath.Join(dir, "lib", svc, "policy")
			}
		}
		if _, err := os.Stat(u.ConfigFile); os.IsNotExist(err) {
			if err := atomicfile.Write(u.ConfigFile, []byte(defaults[u.Name]), 0o600); err != nil {
				return nil, err
			}
		}
		units = append(units, u)
	}
	return units, nil
}
