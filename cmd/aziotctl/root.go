package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// version is the upstream release whose contracts this CLI keeps.
const version = "1.6.0"

// app is what the commands need from the host. Tests replace fields to run in temp
// directories with fake users, hostnames and service managers.
type app struct {
	stdout, stderr io.Writer
	paths          paths
	// lookupUser returns the uid and primary gid of a service user.
	lookupUser func(name string) (uid, gid uint32, err error)
	hostname   func() (string, error)
	geteuid    func() int
	// restart restarts the services after config apply (cli.md §6 `system restart`).
	restart func(a *app) error

	// For check: the clock, the host facts of the json output, the network settings of
	// the connectivity checks and the source of the latest-versions document.
	now            func() time.Time
	hostInfo       func() map[string]any
	net            netSettings
	latestVersions func(ctx context.Context, proxy string) ([]byte, error)
}

// netSettings let tests point the connectivity checks at local TLS servers.
type netSettings struct {
	AMQPPort, HTTPSPort, MQTTPort int // IoT Hub ports: 5671, 443, 8883
	DPSPort                       int // 0: the global endpoint's port (443)
	Roots                         *x509.CertPool
}

func defaultNetSettings() netSettings {
	return netSettings{AMQPPort: 5671, HTTPSPort: 443, MQTTPort: 8883}
}

// paths are the roots the CLI reads and writes. Each can be overridden through an
// environment variable so that tests (and previews) run outside the real system dirs.
type paths struct {
	Etc     string // /etc/aziot            AZIOTCTL_ETC_DIR
	Secrets string // /var/secrets/aziot    AZIOTCTL_SECRETS_DIR
	Run     string // /run/aziot            AZIOTCTL_RUN_DIR
	Lib     string // /var/lib/aziot        AZIOTCTL_LIB_DIR
}

func defaultPaths() paths {
	get := func(env, def string) string {
		if v := os.Getenv(env); v != "" {
			return v
		}
		return def
	}
	return paths{
		Etc:     get("AZIOTCTL_ETC_DIR", "/etc/aziot"),
		Secrets: get("AZIOTCTL_SECRETS_DIR", "/var/secrets/aziot"),
		Run:     get("AZIOTCTL_RUN_DIR", "/run/aziot"),
		Lib:     get("AZIOTCTL_LIB_DIR", "/var/lib/aziot"),
	}
}

func newApp() *app {
	return &app{
		stdout:     os.Stdout,
		stderr:     os.Stderr,
		paths:      defaultPaths(),
		lookupUser: lookupSystemUser,
		hostname:   os.Hostname,
		geteuid:    os.Geteuid,
		restart:    systemRestart,

		now:            time.Now,
		hostInfo:       defaultHostInfo,
		net:            defaultNetSettings(),
		latestVersions: fetchLatestVersions,
	}
}

func lookupSystemUser(name string) (uint32, uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("could not look up user %s: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s: bad uid %q", name, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s: bad gid %q", name, u.Gid)
	}
	return uint32(uid), uint32(gid), nil
}

// commandGroups add their commands to the root. Each command group lives in its own
// file and registers itself from init(), so new groups (policy, module) are new files.
var commandGroups []func(root *cobra.Command, a *app)

func registerGroup(f func(root *cobra.Command, a *app)) {
	commandGroups = append(commandGroups, f)
}

// newRootCommand builds the whole command tree for a.
func newRootCommand(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "aziotctl",
		Short:         "Azure IoT Identity Service administration",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("aziotctl {{.Version}}\n")
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	for _, g := range commandGroups {
		g(root, a)
	}
	return root
}

// usageError marks command-line mistakes, which exit 2 as upstream's clap does.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitError carries an exit status without a message of its own (check's results
// are already printed).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// run executes the CLI and returns the exit status. Unlike upstream, which exits 0 on
// most failures (cli.md §2), we exit 1 on failure: see docs/RATIONALE.md.
func run(a *app, args []string) int {
	root := newRootCommand(a)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintf(a.stderr, "error: %v\n\nFor more information, try '--help'.\n", err)
		return 2
	}
	fmt.Fprintln(a.stderr, formatError(err))
	return 1
}

func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "invalid argument", "required flag"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// causer is an error that keeps its message apart from its cause, so the error can
// be printed in upstream's anyhow form: message, blank line, "Caused by:", causes.
type causer struct {
	msg   string
	cause error
}

func (c *causer) Error() string { return c.msg + ": " + c.cause.Error() }
func (c *causer) Unwrap() error { return c.cause }

func withContext(cause error, format string, args ...any) error {
	return &causer{msg: fmt.Sprintf(format, args...), cause: cause}
}

func formatError(err error) string {
	c, ok := err.(*causer)
	if !ok {
		return err.Error()
	}
	var b strings.Builder
	b.WriteString(c.msg)
	b.WriteString("\n\nCaused by:")
	for i, e := 0, c.cause; e != nil; i++ {
		if n, ok := e.(*causer); ok {
			fmt.Fprintf(&b, "\n    %d: %s", i, n.msg)
			e = n.cause
			continue
		}
		// A plain error's message already includes whatever it wraps.
		fmt.Fprintf(&b, "\n    %d: %s", i, e.Error())
		break
	}
	return b.String()
}
