package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/iotbroker/aziot/broker/identityd"
	"github.com/iotbroker/aziot/broker/keyd"
	"github.com/iotbroker/aziot/broker/tpmd"
	"github.com/spf13/cobra"
)

func init() { registerGroup(addCheckCommand) }

type checkOptions struct {
	dontRun          []string
	output           string
	warningsAsErrors bool
	ntpServer        string
	verbose          bool
	iothubHostname   string
	proxyURI         string
	expectedVersion  string
}

// checkResult is one check's outcome as written in the json formats.
type checkResult struct {
	Result  string   `json:"result"`
	Details []string `json:"details,omitempty"`
}

func ok() checkResult      { return checkResult{Result: "ok"} }
func ignored() checkResult { return checkResult{Result: "ignored"} }
func skipped() checkResult { return checkResult{Result: "skipped"} }
func warning(details ...string) checkResult {
	return checkResult{Result: "warning", Details: details}
}
func failed(details ...string) checkResult { return checkResult{Result: "error", Details: details} }
func fatal(details ...string) checkResult  { return checkResult{Result: "fatal", Details: details} }

// errDetails turns an error chain into details: message, then each cause.
func errDetails(msg string, err error) []string {
	d := []string{msg}
	for e := err; e != nil; {
		if c, ok := e.(*causer); ok {
			d = append(d, c.msg)
			e = c.cause
			continue
		}
		d = append(d, e.Error())
		break
	}
	return d
}

// checker is the state shared by the checks of one run.
type checker struct {
	a    *app
	opts checkOptions
	info map[string]any // additional_info of the running check

	keyd      *keyd.Config
	certd     *certdConfig
	tpmd      *tpmd.Config
	identityd *identityd.Config
	prevState *identityd.Config

	keydRunning, certdRunning bool
}

func addCheckCommand(root *cobra.Command, a *app) {
	var o checkOptions
	var dontRun string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check for common configuration issues",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			switch o.output {
			case "text", "json", "json-stream":
			default:
				return usageError{fmt.Errorf("invalid value '%s' for '--output <OUTPUT>': expected text, json or json-stream", o.output)}
			}
			o.dontRun = strings.Fields(dontRun)
			return runChecks(a, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dontRun, "dont-run", "", "space-separated IDs of checks to ignore")
	f.StringVarP(&o.output, "output", "o", "text", "output format: text, json or json-stream")
	f.BoolVar(&o.warningsAsErrors, "warnings-as-errors", false, "report warnings as errors (and exit non-zero)")
	f.StringVar(&o.ntpServer, "ntp-server", "pool.ntp.org:123", "NTP server for the host-local-time check")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "print cause chains and skipped checks")
	f.StringVar(&o.iothubHostname, "iothub-hostname", "", "IoT Hub hostname for the connectivity checks")
	f.StringVar(&o.proxyURI, "proxy-uri", "", "HTTP proxy for the version, DPS and hub HTTPS checks")
	f.StringVar(&o.expectedVersion, "expected-aziot-version", "", "compare against this version instead of fetching the latest list")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json", "json-stream"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("dont-run", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var ids []string
		for _, s := range checkSections() {
			for _, c := range s.checks {
				ids = append(ids, c.id)
			}
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	})
	root.AddCommand(cmd)
}

type checkEntry struct {
	def    checkDef
	result checkResult
	info   map[string]any
}

// runChecks runs every check in order, stopping at a fatal one, prints the results and
// returns an exit error when a check failed (or warned, with --warnings-as-errors).
func runChecks(a *app, o checkOptions) error {
	c := &checker{a: a, opts: o}
	dont := map[string]bool{}
	for _, id := range o.dontRun {
		dont[id] = true
	}
	type sectionRun struct {
		name    string
		entries []checkEntry
	}
	var runs []sectionRun
	stopped := false
	for _, s := range checkSections() {
		sr := sectionRun{name: s.name}
		for _, d := range s.checks {
			if stopped {
				break
			}
			c.info = map[string]any{}
			var r checkResult
			if dont[d.id] {
				r = ignored()
			} else {
				r = d.run(c)
			}
			if r.Result == "warning" && o.warningsAsErrors {
				r.Result = "error"
			}
			sr.entries = append(sr.entries, checkEntry{d, r, c.info})
			if r.Result == "fatal" {
				stopped = true
			}
		}
		runs = append(runs, sr)
		if stopped {
			break
		}
	}
	top := a.hostInfo()
	top["now"] = a.now().UTC().Format(time.RFC3339Nano)
	if c.identityd != nil && c.identityd.Provisioning != nil {
		p := c.identityd.Provisioning
		if p.IothubHostname != "" {
			top["iothub_hostname"] = p.IothubHostname
		}
		if p.LocalGatewayHostname != "" {
			top["local_gateway_hostname"] = p.LocalGatewayHostname
		}
	}
	if o.iothubHostname != "" {
		top["iothub_hostname"] = o.iothubHostname
	}

	var counts = map[string]int{}
	var out bytes.Buffer
	switch o.output {
	case "text":
		color := a.stdout == os.Stdout && isTerminal(os.Stdout)
		for _, sr := range runs {
			fmt.Fprintln(&out, sr.name)
			fmt.Fprintln(&out, strings.Repeat("-", len(sr.name)))
			for _, e := range sr.entries {
				writeTextResult(&out, e, o.verbose, color)
			}
			fmt.Fprintln(&out)
		}
	case "json":
		checks := map[string]any{}
		for _, sr := range runs {
			for _, e := range sr.entries {
				checks[e.def.id] = map[string]any{"result": e.result, "additional_info": e.info}
			}
		}
		b, _ := json.Marshal(map[string]any{"additional_info": top, "checks": checks})
		out.Write(b)
	case "json-stream":
		enc := func(v any) {
			b, _ := json.Marshal(v)
			out.Write(b)
		}
		for _, sr := range runs {
			enc(map[string]any{"kind": "section", "name": sr.name})
			for _, e := range sr.entries {
				enc(struct {
					Kind           string         `json:"kind"`
					ID             string         `json:"id"`
					Description    string         `json:"description"`
					Result         checkResult    `json:"result"`
					AdditionalInfo map[string]any `json:"additional_info"`
				}{"check", e.def.id, e.def.desc, e.result, e.info})
			}
		}
		final := map[string]any{"kind": "additional_info"}
		for k, v := range top {
			final[k] = v
		}
		enc(final)
	}
	for _, sr := range runs {
		for _, e := range sr.entries {
			counts[e.result.Result]++
		}
	}
	if o.output == "text" {
		hint := ""
		if !o.verbose {
			hint = " Re-run with --verbose for more details."
		}
		fmt.Fprintf(&out, "%d check(s) succeeded.\n", counts["ok"])
		if n := counts["warning"]; n > 0 {
			fmt.Fprintf(&out, "%d check(s) raised warnings.%s\n", n, hint)
		}
		if n := counts["error"] + counts["fatal"]; n > 0 {
			fmt.Fprintf(&out, "%d check(s) raised errors.%s\n", n, hint)
		}
		if n := counts["skipped"]; n > 0 {
			fmt.Fprintf(&out, "%d check(s) were skipped due to errors from other checks.%s\n", n, hint)
		}
	} else {
		out.WriteByte('\n')
	}
	a.stdout.Write(out.Bytes())
	if counts["error"]+counts["fatal"] > 0 {
		return exitError{1}
	}
	return nil
}

func writeTextResult(w *bytes.Buffer, e checkEntry, verbose, color bool) {
	paint := func(code, s string) string {
		if !color {
			return s
		}
		return "\x1b[" + code + "m" + s + "\x1b[0m"
	}
	details := e.result.Details
	switch e.result.Result {
	case "ok":
		fmt.Fprintln(w, paint("32", "√ "+e.def.desc+" - OK"))
		return
	case "ignored":
		return
	case "skipped":
		if !verbose {
			return
		}
		fmt.Fprintln(w, paint("33", "‼ "+e.def.desc+" - Warning"))
		details = []string{"skipping because of previous failures"}
	case "warning":
		fmt.Fprintln(w, paint("33", "‼ "+e.def.desc+" - Warning"))
	default: // error, fatal
		fmt.Fprintln(w, paint("31", "× "+e.def.desc+" - Error"))
	}
	if !verbose && len(details) > 1 {
		details = details[:1]
	}
	for _, d := range details {
		for _, line := range strings.Split(d, "\n") {
			fmt.Fprintln(w, "    "+line)
		}
	}
}

// defaultHostInfo is the top-level additional_info of check's json output.
func defaultHostInfo() map[string]any {
	info := map[string]any{}
	osInfo := map[string]any{"arch": runtime.GOARCH}
	if data, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			v = strings.Trim(v, `"`)
			switch k {
			case "ID":
				osInfo["id"] = v
			case "VERSION_ID":
				osInfo["version_id"] = v
			case "PRETTY_NAME":
				osInfo["pretty_name"] = v
			}
		}
	}
	info["os"] = osInfo
	dmi := map[string]any{}
	for k, f := range map[string]string{"product": "product_name", "vendor": "sys_vendor"} {
		if b, err := os.ReadFile("/sys/devices/virtual/dmi/id/" + f); err == nil {
			dmi[k] = strings.TrimSpace(string(b))
		}
	}
	info["dmi"] = dmi
	info["system_info"] = systemInfo()
	return info
}
