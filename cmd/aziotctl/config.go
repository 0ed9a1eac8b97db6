package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/iotbroker/aziot/broker/superconfig"
	"github.com/spf13/cobra"
)

func init() { registerGroup(addConfigCommands) }

func addConfigCommands(root *cobra.Command, a *app) {
	cfg := &cobra.Command{Use: "config", Short: "Apply or create the super-config"}
	cfg.AddCommand(newConfigApplyCommand(a), newConfigMPCommand(a))
	root.AddCommand(cfg)
}

// serviceFile is one per-service output of config apply.
type serviceFile struct {
	svc, user string
	data      []byte
}

func newConfigApplyCommand(a *app) *cobra.Command {
	var (
		configPath string
		dryRun     string
		hostname   string
		uids       []string
	)
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Apply the super-config to the four services",
		Long: `Apply the super-config (default /etc/aziot/config.toml) to keyd, certd, identityd
and tpmd, then restart the services.

With --dry-run DIR nothing on the system is touched: the four generated files
(keyd.toml, certd.toml, identityd.toml, tpmd.toml, and device-id when the device key
is inline) are written to DIR without the generated-file header, so a change can be
previewed. --hostname and --uid stand in for the host's hostname and service users.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				configPath = filepath.Join(a.paths.Etc, "config.toml")
			}
			overrides, err := parseUIDOverrides(uids)
			if err != nil {
				return usageError{err}
			}
			return configApply(a, configPath, dryRun, hostname, overrides)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&configPath, "config", "c", "", "the super-config to apply (default /etc/aziot/config.toml)")
	f.StringVar(&dryRun, "dry-run", "", "write the generated files into this directory instead of applying them")
	f.StringVar(&hostname, "hostname", "", "use this instead of the host's hostname")
	f.StringArrayVar(&uids, "uid", nil, "USER=UID: use this uid for a service user (repeatable)")
	_ = cmd.MarkFlagDirname("dry-run")
	_ = cmd.MarkFlagFilename("config", "toml")
	return cmd
}

type userIDs struct{ uid, gid uint32 }

func parseUIDOverrides(specs []string) (map[string]userIDs, error) {
	out := map[string]userIDs{}
	for _, s := range specs {
		name, v, ok := strings.Cut(s, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || name == "" || err != nil {
			return nil, fmt.Errorf("invalid value %q for '--uid': expected USER=UID", s)
		}
		out[name] = userIDs{uint32(n), uint32(n)}
	}
	return out, nil
}

func (a *app) user(name string, overrides map[string]userIDs) (userIDs, error) {
	if u, ok := overrides[name]; ok {
		return u, nil
	}
	uid, gid, err := a.lookupUser(name)
	if err != nil {
		return userIDs{}, err
	}
	return userIDs{uid, gid}, nil
}

// configApply reads, translates and, only when everything succeeded, writes.
func configApply(a *app, configPath, dryRun, hostname string, overrides map[string]userIDs) error {
	data, err := os.ReadFile(configPath)
	if err != nil {
		return withContext(err, "could not read config file %s", configPath)
	}
	cfg, err := superconfig.Parse(configPath, data)
	if err != nil {
		return withContext(err, "could not parse config file")
	}
	if dryRun == "" && a.geteuid() != 0 {
		return errors.New("this command must be run as root")
	}
	users := map[string]userIDs{}
	needed := []string{"aziotcs", "aziotid"}
	if dryRun == "" {
		needed = append(needed, "aziotks", "aziottpm")
	}
	for _, n := range needed {
		if users[n], err = a.user(n, overrides); err != nil {
			return withContext(err, "could not determine the uid of %s (use --uid %s=UID)", n, n)
		}
	}
	env := superconfig.Env{Hostname: hostname, AziotcsUID: users["aziotcs"].uid, AziotidUID: users["aziotid"].uid}
	if env.Hostname == "" && cfg.Hostname == nil {
		if env.Hostname, err = a.hostname(); err != nil {
			return withContext(err, "could not get hostname")
		}
	}
	out, err := superconfig.Apply(cfg, env)
	if err != nil {
		return err
	}
	for _, w := range out.Warnings {
		fmt.Fprintln(a.stderr, w)
	}
	files := []serviceFile{
		{"keyd", "aziotks", out.Keyd},
		{"certd", "aziotcs", out.Certd},
		{"identityd", "aziotid", out.Identityd},
		{"tpmd", "aziottpm", out.Tpmd},
	}
	if dryRun != "" {
		return writeDryRun(a, dryRun, files, out.DeviceKey)
	}

	if out.DeviceKey != nil {
		ks := users["aziotks"]
		dir := filepath.Join(a.paths.Secrets, "keyd")
		path := filepath.Join(dir, "device-id")
		fmt.Fprintf(a.stdout, "Note: Symmetric key will be written to %s\n", path)
		if err := ensureDir(dir, 0o700, int(ks.uid), int(ks.gid)); err != nil {
			return err
		}
		if err := writeFileAtomic(path, out.DeviceKey, 0o600, int(ks.uid), int(ks.gid)); err != nil {
			return err
		}
	}
	for _, f := range files {
		u := users[f.user]
		dir := filepath.Join(a.paths.Etc, f.svc, "config.d")
		if err := ensureDir(dir, 0o700, int(u.uid), int(u.gid)); err != nil {
			return err
		}
		data := append([]byte(superconfig.Header), f.data...)
		if err := writeFileAtomic(filepath.Join(dir, "00-super.toml"), data, 0o600, int(u.uid), int(u.gid)); err != nil {
			return err
		}
	}
	fmt.Fprintln(a.stdout, "Azure IoT Identity Service has been configured successfully!")
	fmt.Fprintln(a.stdout)
	fmt.Fprintln(a.stdout, "Restarting service for configuration to take effect...")
	if err := a.restart(a); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, "Done.")
	return nil
}

// writeDryRun writes the preview files into dir, which must exist, and nothing else.
func writeDryRun(a *app, dir string, files []serviceFile, deviceKey []byte) error {
	st, err := os.Stat(dir)
	if err != nil {
		return withContext(err, "could not use --dry-run directory %s", dir)
	}
	if !st.IsDir() {
		return fmt.Errorf("--dry-run %s is not a directory", dir)
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.svc+".toml"), f.data, 0o600, -1, -1); err != nil {
			return err
		}
	}
	if deviceKey != nil {
		if err := writeFileAtomic(filepath.Join(dir, "device-id"), deviceKey, 0o600, -1, -1); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stdout, "Wrote the generated configuration to %s (dry run: nothing was applied).\n", dir)
	return nil
}

func newConfigMPCommand(a *app) *cobra.Command {
	var (
		connStr string
		out     string
		force   bool
	)
	cmd := &cobra.Command{
		Use:   "mp",
		Short: "Create a super-config for manual provisioning with a connection string",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				out = filepath.Join(a.paths.Etc, "config.toml")
			}
			return configMP(a, connStr, out, force)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&connStr, "connection-string", "c", "", "the device connection string")
	f.StringVarP(&out, "out-config-file", "o", "", "where to write the super-config (default /etc/aziot/config.toml)")
	f.BoolVarP(&force, "force", "f", false, "overwrite the file if it exists")
	_ = cmd.MarkFlagRequired("connection-string")
	_ = cmd.MarkFlagFilename("out-config-file", "toml")
	return cmd
}

func configMP(a *app, connStr, out string, force bool) error {
	if _, err := superconfig.ParseConnectionString(connStr); err != nil {
		return withContext(err, "invalid connection string")
	}
	if _, err := os.Lstat(out); err == nil && !force {
		return fmt.Errorf("cannot write to %s because it already exists; to apply it, run\n"+
			"    sudo aziotctl config apply -c '%s'\n"+
			"or to overwrite it, run\n"+
			"    sudo aziotctl config mp --force", out, out)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return withContext(err, "could not check %s", out)
	}
	doc := "[provisioning]\nsource = \"manual\"\nconnection_string = " + tomlString(connStr) + "\n"
	if err := writeFileAtomic(out, []byte(doc), 0o600, -1, -1); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, "Azure IoT Identity Service has been configured for manual provisioning with a connection string.")
	fmt.Fprintf(a.stdout, "The configuration has been written to %s\n", out)
	fmt.Fprintf(a.stdout, "To apply the new configuration to services, run:\n    sudo aziotctl config apply -c '%s'\n", out)
	return nil
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
