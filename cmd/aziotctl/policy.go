package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/spf13/cobra"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/broker/config"
	"github.com/iotbroker/aziot/broker/daemon"
	"github.com/iotbroker/aziot/policy"
)

// The `policy` command group (docs/policy.md §11): test, eval, explain, status, install,
// build.
func init() { registerGroup(addPolicyCommands) }

// policyServices are the services whose config may carry policy settings.
var policyServices = []string{"keyd", "certd", "identityd", "tpmd"}

// serviceConfig is what the policy commands read of a service's config.
type serviceConfig struct {
	Name     string
	Exists   bool
	Settings broker.Settings
	// Patterns are the keyd keys / certd certs patterns by uid.
	Patterns map[uint32][]string
}

func (a *app) serviceConfig(svc string) (*serviceConfig, error) {
	main := filepath.Join(a.paths.Etc, svc, "config.toml")
	dir := filepath.Join(a.paths.Etc, svc, "config.d")
	sc := &serviceConfig{Name: svc, Patterns: map[uint32][]string{}}
	if _, err := os.Stat(main); err == nil {
		sc.Exists = true
	}
	doc, err := config.Read(main, dir)
	if err != nil {
		return nil, withContext(err, "could not read the %s config", svc)
	}
	var cfg struct {
		Broker     broker.Settings `toml:"broker"`
		Principals []struct {
			UID   uint32   `toml:"uid"`
			Keys  []string `toml:"keys"`
			Certs []string `toml:"certs"`
		} `toml:"principal"`
	}
	if err := config.Decode(doc, &cfg); err != nil {
		return nil, withContext(err, "could not parse the %s config", svc)
	}
	sc.Settings = cfg.Broker
	for _, p := range cfg.Principals {
		switch svc {
		case "keyd":
			sc.Patterns[p.UID] = append(sc.Patterns[p.UID], p.Keys...)
		case "certd":
			sc.Patterns[p.UID] = append(sc.Patterns[p.UID], p.Certs...)
		}
	}
	// Defaults follow the app's paths, which are upstream's unless overridden.
	if sc.Settings.PolicyDir == "" {
		sc.Settings.PolicyDir = filepath.Join(a.paths.Etc, "policy.d")
	}
	if sc.Settings.PolicyBundleDir == "" {
		sc.Settings.PolicyBundleDir = filepath.Join(a.paths.Lib, "policy")
	}
	if sc.Settings.PolicyStateDir == "" {
		sc.Settings.PolicyStateDir = filepath.Join(a.paths.Lib, svc, "policy")
	}
	return sc, nil
}

// configuredServices returns the services with a config file (all four when none has
// one, so that defaults still apply).
func (a *app) configuredServices() ([]*serviceConfig, error) {
	var out, all []*serviceConfig
	for _, svc := range policyServices {
		sc, err := a.serviceConfig(svc)
		if err != nil {
			return nil, err
		}
		all = append(all, sc)
		if sc.Exists {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return all, nil
	}
	return out, nil
}

func addPolicyCommands(root *cobra.Command, a *app) {
	pol := &cobra.Command{Use: "policy", Short: "Test, evaluate, install and inspect the Rego authorization policy"}
	pol.AddCommand(policyTestCommand(a), policyEvalCommand(a, false), policyEvalCommand(a, true),
		policyStatusCommand(a), policyInstallCommand(a), policyBuildCommand(a))
	root.AddCommand(pol)
}

// ---------------------------------------------------------------- test

func policyTestCommand(a *app) *cobra.Command {
	var builtin, verbose bool
	var run string
	cmd := &cobra.Command{
		Use:   "test [DIR]",
		Short: "Run the Rego tests of a policy directory (default: the configured policy_dir)",
		Long: `Runs the test_* rules of DIR's *_test.rego files with OPA's test framework over the
default policy and DIR's modules and data, as every service does before it activates DIR.
A module that does not compile fails the run. --builtin adds the default policy's own
tests. Exit status 1 when a test fails.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := ""
			if len(args) == 1 {
				dir = args[0]
			} else {
				sc, err := a.serviceConfig("keyd")
				if err != nil {
					return err
				}
				dir = sc.Settings.PolicyDir
			}
			layers := map[string]*policy.Layer{}
			l, err := policy.LoadDir(dir)
			if err != nil {
				return err
			}
			if l == nil {
				if _, err := os.Stat(dir); err != nil {
					return withContext(err, "could not read the policy directory %s", dir)
				}
			} else {
				layers["policy.d"] = l
				e, err := policy.NewEngine(nil, nil)
				if err != nil {
					return err
				}
				if err := e.SetLayers(map[string]*policy.Layer{"policy.d": {Modules: l.Modules, Data: l.Data}}); err != nil {
					return err
				}
			}

			var filter *regexp.Regexp
			if run != "" {
				if filter, err = regexp.Compile(run); err != nil {
					return usageError{fmt.Errorf("--run: %w", err)}
				}
			}
			var results []policy.TestResult
			if builtin {
				// The default policy's tests describe the default policy alone.
				if results, err = policy.RunDefaultTests(cmd.Context()); err != nil {
					return err
				}
			}
			if len(layers) > 0 {
				rs, err := policy.RunTests(cmd.Context(), layers, policy.DefaultTestTimeout)
				if err != nil {
					return err
				}
				results = append(results, rs...)
			}
			pass, fail, skip := 0, 0, 0
			for _, r := range results {
				if filter != nil && !filter.MatchString(r.Name) {
					continue
				}
				switch {
				case r.Skip:
					skip++
				case r.Pass:
					pass++
				default:
					fail++
				}
				if verbose || (!r.Pass && !r.Skip) {
					fmt.Fprintln(a.stdout, r.String())
					if r.Output != "" && (verbose || !r.Pass) {
						fmt.Fprint(a.stdout, indent(r.Output))
					}
				}
			}
			if pass+fail+skip == 0 {
				fmt.Fprintf(a.stdout, "no tests in %s (its modules compile)\n", dir)
				return nil
			}
			fmt.Fprintln(a.stdout, strings.Repeat("-", 80))
			if fail > 0 {
				fmt.Fprintf(a.stdout, "PASS: %d/%d\nFAIL: %d/%d\n", pass, pass+fail+skip, fail, pass+fail+skip)
				return exitError{1}
			}
			fmt.Fprintf(a.stdout, "PASS: %d/%d\n", pass, pass+fail+skip)
			return nil
		},
	}
	cmd.Flags().BoolVar(&builtin, "builtin", false, "also run the default policy's own tests")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "show every test, not only failures")
	cmd.Flags().StringVar(&run, "run", "", "run only the tests whose name matches this regular expression")
	return cmd
}

func indent(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + line + "\n")
	}
	return b.String()
}

// ---------------------------------------------------------------- eval / explain

func policyEvalCommand(a *app, explain bool) *cobra.Command {
	var inputPath, dir, bundlePath, format, mode string
	var noDir, noBundle, fail bool
	use, short := "eval", "Show the decision of the policy in force for an input document"
	if explain {
		use, short = "explain", "Show the decision for an input document with OPA's evaluation trace"
	}
	cmd := &cobra.Command{
		Use:   use + " --input FILE",
		Short: short,
		Long: short + `.
The input (JSON, "-" for stdin) is validated against the input schema (version 1). The
policy is the default policy, the policy directory and the installed bundle, as the
service named in the input has them configured; the principals come from its config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := readInputFile(inputPath)
			if err != nil {
				return err
			}
			raw = withInputVersion(raw)
			if err := validateInput(raw); err != nil {
				return err
			}
			in, err := policy.ParseInput(raw)
			if err != nil {
				return err
			}
			sc, err := a.serviceConfig(in.Service)
			if err != nil {
				return err
			}
			e, err := policy.NewEngine(nil, policy.PrincipalData(in.Service, sc.Patterns))
			if err != nil {
				return err
			}
			layers := map[string]*policy.Layer{}
			if !noDir {
				if dir == "" {
					dir = sc.Settings.PolicyDir
				}
				l, err := policy.LoadDir(dir)
				if err != nil {
					return err
				}
				layers["policy.d"] = l
			}
			if !noBundle {
				l, err := loadBundleLayer(sc, bundlePath)
				if err != nil {
					return err
				}
				layers["bundle"] = l
			}
			if err := e.SetLayers(layers); err != nil {
				return err
			}
			var d policy.Decision
			var trace bytes.Buffer
			if explain {
				d, err = e.Explain(cmd.Context(), in, mode, &trace)
			} else {
				d, err = e.Decide(cmd.Context(), in)
			}
			if err != nil {
				return err
			}
			cacheable, because := e.Cacheable()
			out := map[string]any{
				"allowed": d.Allowed(), "allow": d.Allow, "deny": nonNil(d.Deny), "revision": d.Revision, "policy_id": d.PolicyID,
				"cacheable": cacheable,
			}
			if len(because) > 0 {
				out["not_cached_because"] = because
			}
			if format == "json" {
				if explain {
					out["trace"] = trace.String()
				}
				b, _ := json.MarshalIndent(out, "", "  ")
				fmt.Fprintln(a.stdout, string(b))
			} else {
				if explain {
					fmt.Fprint(a.stdout, trace.String())
					fmt.Fprintln(a.stdout, strings.Repeat("-", 80))
				}
				result := "deny"
				if d.Allowed() {
					result = "allow"
				}
				fmt.Fprintf(a.stdout, "result:    %s\nallow:     %v\ndeny:      %s\nrevision:  %s\npolicy_id: %s\n", result, d.Allow, quoteList(d.Deny), orNone(d.Revision), d.PolicyID)
				if !cacheable {
					fmt.Fprintf(a.stdout, "cache:     off (%s)\n", strings.Join(because, ", "))
				}
			}
			if fail && !d.Allowed() {
				return exitError{3}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&inputPath, "input", "", "input document (JSON file, - for stdin)")
	cmd.MarkFlagRequired("input")
	cmd.Flags().StringVar(&dir, "dir", "", "policy directory (default: the service's policy_dir)")
	cmd.Flags().BoolVar(&noDir, "no-dir", false, "leave the policy directory out")
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "evaluate with this bundle instead of the installed one (verified with the service's keys)")
	cmd.Flags().BoolVar(&noBundle, "no-bundle", false, "leave bundles out")
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().BoolVar(&fail, "fail", false, "exit with status 3 when the request would be refused")
	if explain {
		cmd.Flags().StringVar(&mode, "mode", "full", "trace: full (every step), notes (trace() notes), fails (failed expressions)")
	}
	return cmd
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func quoteList(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "(no bundle)"
	}
	return s
}

func readInputFile(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, withContext(err, "could not read the input %s", path)
	}
	return b, nil
}

// withInputVersion adds "input_version": 1 to a hand-written input that has none.
func withInputVersion(raw []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	if _, ok := m["input_version"]; ok {
		return raw
	}
	m["input_version"] = json.RawMessage("1")
	b, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return b
}

func validateInput(raw []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(policy.InputSchema()))
	if err != nil {
		return err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(policy.SchemaID, doc); err != nil {
		return err
	}
	s, err := c.Compile(policy.SchemaID)
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return withContext(err, "the input is not JSON")
	}
	if err := s.Validate(v); err != nil {
		return withContext(err, "the input is not a valid input document (policy/input.schema.json)")
	}
	return nil
}

// loadBundleLayer reads the bundle at path (or, with path "", the installed one) and
// verifies it with the service's trusted keys, as the service does.
func loadBundleLayer(sc *serviceConfig, path string) (*policy.Layer, error) {
	keys, err := daemon.BundleKeys(sc.Settings)
	if err != nil {
		return nil, err
	}
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		vb, err := policy.ReadBundle(raw, keys, false)
		if err != nil {
			return nil, withContext(err, "bundle %s refused", path)
		}
		return policy.BundleLayer(vb, "file"), nil
	}
	ib, err := policy.ReadInstalled(sc.Settings.PolicyBundleDir)
	if err != nil || ib == nil {
		return nil, err
	}
	vb, err := policy.ReadBundle(ib.Raw, keys, ib.Record.Forced)
	if err != nil {
		return nil, withContext(err, "installed bundle refused")
	}
	return policy.BundleLayer(vb, "install"), nil
}

// ---------------------------------------------------------------- status

func policyStatusCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the policy in force per service: bundle revision, policy directory, last refusal",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			scs, err := a.configuredServices()
			if err != nil {
				return err
			}
			type entry struct {
				Service   string                `json:"service"`
				StateFile string                `json:"status_file"`
				Status    *policy.Status        `json:"status,omitempty"`
				Installed *policy.InstallRecord `json:"installed_bundle,omitempty"`
				Error     string                `json:"error,omitempty"`
			}
			var entries []entry
			for _, sc := range scs {
				en := entry{Service: sc.Name, StateFile: filepath.Join(sc.Settings.PolicyStateDir, "status.json")}
				b, err := os.ReadFile(en.StateFile)
				if err == nil {
					var st policy.Status
					if err := json.Unmarshal(b, &st); err != nil {
						en.Error = err.Error()
					} else {
						en.Status = &st
					}
				} else {
					en.Error = "no status: the service has not run with this config yet"
				}
				if ib, err := policy.ReadInstalled(sc.Settings.PolicyBundleDir); err == nil && ib != nil {
					en.Installed = &ib.Record
				}
				entries = append(entries, en)
			}
			if asJSON {
				b, _ := json.MarshalIndent(entries, "", "  ")
				fmt.Fprintln(a.stdout, string(b))
				return nil
			}
			for _, en := range entries {
				fmt.Fprintf(a.stdout, "%s:\n", en.Service)
				if en.Status == nil {
					fmt.Fprintf(a.stdout, "  %s (%s)\n", en.Error, en.StateFile)
				} else {
					printStatus(a.stdout, en.Status)
				}
				if en.Installed != nil {
					r := en.Installed
					fmt.Fprintf(a.stdout, "  installed bundle: revision %s, %s, installed %s%s\n", r.Revision, signedText(r.Verified, r.KeyID), r.InstalledAt.Format(time.RFC3339), forcedText(r.Forced))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func signedText(verified bool, kid string) string {
	if verified {
		return "signed by " + kid
	}
	return "NOT verified"
}

func forcedText(forced bool) string {
	if forced {
		return " (forced)"
	}
	return ""
}

func printStatus(w io.Writer, st *policy.Status) {
	rev := st.Revision
	if rev == "" {
		rev = "none (no bundle)"
	}
	fmt.Fprintf(w, "  revision in force: %s\n  policy id: %s, activated %s (pid %d)\n", rev, st.PolicyID, st.ActivatedAt.Format(time.RFC3339), st.PID)
	if st.FromLastGood {
		fmt.Fprintln(w, "  STARTED WITH THE LAST GOOD POLICY: the current one was refused")
	}
	if l, ok := st.Layers["bundle"]; ok {
		m := l.Meta
		fmt.Fprintf(w, "  bundle: revision %s from %v, %s%s, %d modules\n", l.Revision, m["source"], signedText(m["verified"] == true, fmt.Sprint(m["key_id"])), forcedText(m["forced"] == true), len(l.Modules))
	}
	if l, ok := st.Layers["policy.d"]; ok {
		fmt.Fprintf(w, "  policy.d: %d modules, %d test files\n", len(l.Modules), len(l.Tests))
		for _, m := range l.Modules {
			fmt.Fprintf(w, "    %s\n", m)
		}
	} else {
		fmt.Fprintln(w, "  policy.d: no custom policy")
	}
	if st.Cache.Enabled {
		fmt.Fprintln(w, "  decision cache: on")
	} else {
		fmt.Fprintf(w, "  decision cache: off (%s)\n", strings.Join(st.Cache.Because, ", "))
	}
	if st.Poll != nil {
		fmt.Fprintf(w, "  bundle server: %s, last poll %s: %s\n", st.Poll.URL, st.Poll.LastPoll.Format(time.RFC3339), st.Poll.Result)
	}
	if e := st.LastError; e != nil {
		fmt.Fprintf(w, "  last refusal: %s (%s) %s\n    %s\n", e.Time.Format(time.RFC3339), e.Source, e.File, strings.ReplaceAll(e.Message, "\n", "\n    "))
	}
}

// ---------------------------------------------------------------- install

func policyInstallCommand(a *app) *cobra.Command {
	var force bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "install BUNDLE",
		Short: "Verify a signed policy bundle and activate it atomically for every service",
		Long: `Verifies BUNDLE (OPA's bundle format and signature) against the trusted keys of every
service's config, refuses a lower revision than the installed one, writes it beside the
installed versions and switches the active link atomically. Each service verifies it again
and activates it within 2 seconds; install waits for them (--wait) and shows the result.
--force installs an unsigned, unverifiable or lower-revision bundle.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw []byte
			var err error
			if args[0] == "-" {
				raw, err = io.ReadAll(io.LimitReader(os.Stdin, policy.MaxBundleBytes+1))
			} else {
				raw, err = os.ReadFile(args[0])
			}
			if err != nil {
				return withContext(err, "could not read the bundle %s", args[0])
			}
			scs, err := a.configuredServices()
			if err != nil {
				return err
			}
			byDir := map[string][]*serviceConfig{}
			var dirs []string
			for _, sc := range scs {
				d := sc.Settings.PolicyBundleDir
				if _, ok := byDir[d]; !ok {
					dirs = append(dirs, d)
				}
				byDir[d] = append(byDir[d], sc)
			}
			sort.Strings(dirs)
			started := time.Now().UTC()
			var installed []*serviceConfig
			var rec *policy.InstallRecord
			for _, d := range dirs {
				var keys map[string]*policy.KeyConfig
				for _, sc := range byDir[d] {
					k, err := daemon.BundleKeys(sc.Settings)
					if err != nil {
						return withContext(err, "%s config", sc.Name)
					}
					if _, err := policy.ReadBundle(raw, k, force); err != nil {
						return bundleRefusal(err, sc.Name)
					}
					keys = k
				}
				rec, err = policy.InstallBundle(d, raw, keys, force)
				if err != nil {
					return bundleRefusal(err, "")
				}
				fmt.Fprintf(a.stdout, "installed revision %s in %s (%s%s)\n", rec.Revision, d, signedText(rec.Verified, rec.KeyID), forcedText(rec.Forced))
				installed = append(installed, byDir[d]...)
			}
			return a.waitServices(installed, rec.Revision, started, wait)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "install even if unsigned, not verifiable or of a lower revision")
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Second, "how long to wait for the services to report the new revision (0: do not wait)")
	return cmd
}

func bundleRefusal(err error, svc string) error {
	var be *policy.BundleError
	msg := "bundle refused"
	if svc != "" {
		msg = "bundle refused by " + svc + "'s trusted keys"
	}
	if errors.As(err, &be) && be.Forceable {
		msg += " (--force overrides)"
	}
	return withContext(err, "%s", msg)
}

// waitServices waits until each running service reports rev in force (or a refusal)
// after since; services that do not update their status are reported as not running.
func (a *app) waitServices(scs []*serviceConfig, rev string, since time.Time, wait time.Duration) error {
	if wait <= 0 {
		return nil
	}
	deadline := time.Now().Add(wait)
	pending := map[string]*serviceConfig{}
	for _, sc := range scs {
		pending[sc.Name] = sc
	}
	refused := false
	for len(pending) > 0 {
		for _, name := range policyServices {
			sc, ok := pending[name]
			if !ok {
				continue
			}
			b, err := os.ReadFile(filepath.Join(sc.Settings.PolicyStateDir, "status.json"))
			if err != nil {
				continue
			}
			var st policy.Status
			if json.Unmarshal(b, &st) != nil || st.UpdatedAt.Before(since) {
				continue
			}
			if st.Revision == rev && !st.ActivatedAt.Before(since) {
				fmt.Fprintf(a.stdout, "%s: revision %s in force\n", name, rev)
				delete(pending, name)
			} else if st.LastError != nil && !st.LastError.Time.Before(since) && st.LastError.Source == "bundle" {
				fmt.Fprintf(a.stdout, "%s: REFUSED: %s\n", name, st.LastError.Message)
				refused = true
				delete(pending, name)
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, name := range policyServices {
		if _, ok := pending[name]; ok {
			fmt.Fprintf(a.stdout, "%s: no report within %s (not running?)\n", name, wait)
		}
	}
	if refused {
		return exitError{1}
	}
	return nil
}

// ---------------------------------------------------------------- build

func policyBuildCommand(a *app) *cobra.Command {
	var revision, keyPath, keyID, alg, out string
	cmd := &cobra.Command{
		Use:   "build DIR --revision R -o OUT",
		Short: "Build an OPA bundle from a policy directory, signed with OPA's signature format",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := policy.LoadDir(args[0])
			if err != nil {
				return err
			}
			if l == nil {
				return fmt.Errorf("%s holds no policy", args[0])
			}
			// The bundle must compile and pass its tests, as the services will check.
			e, err := policy.NewEngine(nil, nil)
			if err != nil {
				return err
			}
			if err := e.SetLayer("bundle", l); err != nil {
				return err
			}
			b := bundle.Bundle{Manifest: bundle.Manifest{Revision: revision}, Data: l.Data}
			b.Manifest.Init()
			for _, set := range []map[string]string{l.Modules, l.Tests} {
				names := make([]string, 0, len(set))
				for n := range set {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					rel, _ := filepath.Rel(args[0], n)
					p := "/" + filepath.ToSlash(rel)
					b.Modules = append(b.Modules, bundle.ModuleFile{URL: p, Path: p, Raw: []byte(set[n])})
				}
			}
			if keyPath != "" {
				if keyID == "" {
					return usageError{errors.New("--key-id is required with --signing-key: services refuse a signature without a key ID")}
				}
				key, err := os.ReadFile(keyPath)
				if err != nil {
					return err
				}
				if err := b.GenerateSignature(bundle.NewSigningConfig(string(key), alg, ""), keyID, false); err != nil {
					return withContext(err, "could not sign the bundle")
				}
			}
			var buf bytes.Buffer
			if err := bundle.NewWriter(&buf).Write(b); err != nil {
				return err
			}
			if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
				return err
			}
			signed := "unsigned"
			if keyPath != "" {
				signed = "signed by " + keyID
			}
			fmt.Fprintf(a.stdout, "wrote %s: revision %s, %d modules, %s\n", out, revision, len(b.Modules), signed)
			return nil
		},
	}
	cmd.Flags().StringVar(&revision, "revision", "", "the bundle's revision (compared naturally: 9 < 10)")
	cmd.MarkFlagRequired("revision")
	cmd.Flags().StringVar(&keyPath, "signing-key", "", "PEM private key (or HMAC secret) to sign with")
	cmd.Flags().StringVar(&keyID, "key-id", "", "the key ID (kid) the services trust the key under")
	cmd.Flags().StringVar(&alg, "signing-alg", "ES256", "JWS algorithm (RS256, PS256, ES256, HS256, ...)")
	cmd.Flags().StringVarP(&out, "output", "o", "bundle.tar.gz", "output file")
	return cmd
}
