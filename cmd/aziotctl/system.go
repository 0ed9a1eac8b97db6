package main

import (
	"errors"
	"fmt"
	"os/exec"

	"github.com/spf13/cobra"
)

func init() { registerGroup(addSystemCommands) }

// errNotBuilt answers the system subcommands until packaging lands.
var errNotBuilt = errors.New("not built yet: `aziotctl system` arrives with the packaging work")

func addSystemCommands(root *cobra.Command, a *app) {
	sys := &cobra.Command{Use: "system", Short: "Manage the system services"}
	notBuilt := func(use, short string, args cobra.PositionalArgs) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: args,
			RunE: func(*cobra.Command, []string) error { return errNotBuilt }}
	}
	setLevel := notBuilt("set-log-level <error|warn|info|debug|trace>", "Set the services' log level", cobra.ExactArgs(1))
	setLevel.ValidArgs = []string{"error", "warn", "info", "debug", "trace"}
	sys.AddCommand(
		&cobra.Command{Use: "restart", Short: "Restart the services", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error { return a.restart(a) }},
		notBuilt("stop", "Stop the services", cobra.NoArgs),
		notBuilt("status", "Show the services' status", cobra.NoArgs),
		notBuilt("logs [-- <journalctl args>...]", "Show the services' logs", cobra.ArbitraryArgs),
		setLevel,
		notBuilt("reprovision", "Reprovision the device with IoT Hub", cobra.NoArgs),
	)
	root.AddCommand(sys)
}

// serviceOrder is the order of cli.md §6.
var serviceOrder = []string{"aziot-identityd", "aziot-keyd", "aziot-certd", "aziot-tpmd"}

// systemRestart stops every service, starts their sockets, then starts identityd
// (the others start on demand). A failing systemctl call is reported, not fatal.
func systemRestart(a *app) error {
	systemctl := func(args ...string) bool {
		out, err := exec.Command("systemctl", args...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(a.stderr, "%s", out)
			fmt.Fprintf(a.stderr, "systemctl %v: %v\n", args, err)
			return false
		}
		return true
	}
	for _, s := range serviceOrder {
		fmt.Fprintf(a.stdout, "Stopping %s.service...", s)
		if systemctl("stop", s+".service") {
			fmt.Fprintln(a.stdout, "Stopped!")
		} else {
			fmt.Fprintln(a.stdout)
		}
	}
	for _, s := range serviceOrder {
		systemctl("start", s+".socket")
	}
	systemctl("start", "aziot-identityd.service")
	return nil
}
