// Command aziot-cloud-emulator runs the DPS + IoT Hub + EST emulator (package emulator)
// as a standalone process configured by a TOML file, for people who test their own
// devices and for cross-client runs. It prints the root CA path and every endpoint, then
// serves until SIGINT or SIGTERM. See docs/emulator.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/iotbroker/aziot/emulator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "aziot-cloud-emulator:", err)
		os.Exit(1)
	}
}

// run starts the emulator from the flags, prints its endpoints and blocks until ctx ends.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("aziot-cloud-emulator", flag.ContinueOnError)
	fs.SetOutput(out)
	path := fs.String("config", "", "TOML configuration file (required)")
	example := fs.Bool("example", false, "print an example configuration and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *example {
		_, err := io.WriteString(out, exampleConfig)
		return err
	}
	if *path == "" {
		fs.Usage()
		return fmt.Errorf("-config is required")
	}
	cfg, faults, err := loadConfig(*path)
	if err != nil {
		return err
	}
	e, err := emulator.Start(cfg)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer e.Stop()
	for _, f := range faults {
		e.AddFault(f)
	}
	root, err := e.RootCAPath()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "root_ca = %s\n", root)
	if u := e.DPSURL(); u != "" {
		fmt.Fprintf(out, "dps = %s\n", u)
	}
	for _, h := range e.HubNames() {
		fmt.Fprintf(out, "hub %s = %s\n", h, e.HubURL(h))
		fmt.Fprintf(out, "hub %s iothubowner key = %s\n", h, e.PolicyKey(h, "iothubowner"))
	}
	if u := e.ESTURL(); u != "" {
		fmt.Fprintf(out, "est = %s/.well-known/est\n", u)
	}
	if u := e.ESTPlainURL(); u != "" {
		fmt.Fprintf(out, "est_plain = %s/.well-known/est\n", u)
	}
	if u := e.AdminURL(); u != "" {
		fmt.Fprintf(out, "admin = %s (Authorization: Bearer %s)\n", u, e.AdminToken())
	}
	fmt.Fprintln(out, "ready")
	<-ctx.Done()
	return nil
}
