// Command aziotd is the broker's one daemon binary. Called as aziot-keyd, aziot-certd or
// aziot-identityd (a symlink, as upstream's packages install them) it runs that service;
// `aziotd dev` runs every service in one process as the current user, for the demo and the tests.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/iotbroker/aziot/broker/daemon"
)

// GC settings unless the operator set GOGC or GOMEMLIMIT. The daemon's live heap is a few
// MiB and every request allocates a few KiB, so with Go's defaults it collects dozens of
// times a second under load: a fifth of keyd's CPU per sign. A higher GOGC collects four
// times less often; the soft memory limit keeps a burst (a flood of large bodies, many
// connections) from growing the heap five times over.
const (
	defaultGCPercent   = 400
	defaultMemoryLimit = 128 << 20
)

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}

// settled runs once every socket answers: start-up (policy compilation above all) leaves
// garbage that the high GOGC would keep resident; give it back before serving.
func settled() { debug.FreeOSMemory() }

func main() {
	tuneGC()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, filepath.Base(os.Args[0]), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "aziotd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, argv0 string, args []string) error {
	if svc, ok := strings.CutPrefix(argv0, "aziot-"); ok {
		u, err := daemon.ByName(svc)
		if err != nil {
			return err
		}
		return daemon.Run(ctx, []daemon.Unit{u}, daemon.Logger(), settled)
	}
	root := &cobra.Command{
		Use:           "aziotd",
		Short:         "The aziot broker daemon (keyd, certd, identityd); run as aziot-<service> or use a subcommand",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, name := range []string{"keyd", "certd", "identityd"} {
		name := name
		root.AddCommand(&cobra.Command{
			Use:   name,
			Short: "Run " + name + " with the packaged paths (as aziot-" + name + " does)",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				u, err := daemon.ByName(name)
				if err != nil {
					return err
				}
				return daemon.Run(cmd.Context(), []daemon.Unit{u}, daemon.Logger(), settled)
			},
		})
	}
	var stateDir, cpuProfile string
	dev := &cobra.Command{
		Use:   "dev",
		Short: "Run every service in this process as the current user under --state-dir",
		Long: `Runs keyd, certd and identityd in one process with user-space paths:
  sockets    DIR/run/<svc>.sock
  configs    DIR/etc/<svc>/config.toml (defaults written when absent) + DIR/etc/<svc>/config.d/*.toml
  homedirs   DIR/lib/<svc>
  policies   DIR/etc/policy.d
The default configs give the current user every key and cert, keep upstream's
max_requests = 10 per user, and re-read changed configs after 1 s (upstream: 10 s).
identityd's default config has provisioning source "none"; a config.d file's
[provisioning] replaces it. A failed start-up provisioning is retried with back-off
([broker] provisioning_retry_ms) while identityd answers "device identity not found".
Prints "ready" once every socket answers and identityd's start-up provisioning and
reconciliation finished or failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stateDir == "" {
				return fmt.Errorf("--state-dir is required")
			}
			units, err := daemon.DevUnits(stateDir)
			if err != nil {
				return err
			}
			if cpuProfile != "" {
				// For `make bench` investigations: the profile of the daemon itself under a
				// load, written when it stops (SIGINT or SIGTERM).
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("cpu profile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("cpu profile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			return daemon.Run(cmd.Context(), units, daemon.Logger(), func() { settled(); fmt.Println("ready") })
		},
	}
	dev.Flags().StringVar(&stateDir, "state-dir", "", "directory for sockets, configs and homedirs")
	dev.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the daemon to this file when it stops")
	root.AddCommand(dev)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
