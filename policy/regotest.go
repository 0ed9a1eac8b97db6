package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// DefaultTestTimeout bounds a run of a policy's Rego tests.
const DefaultTestTimeout = 10 * time.Second

// TestResult is the outcome of one Rego test.
type TestResult struct {
	// File and Row locate the test rule; Name is data.<package>.<rule>.
	File     string
	Row      int
	Name     string
	Pass     bool
	Skip     bool
	Error    string // evaluation error, if any
	Output   string // print() output
	Duration time.Duration
}

func (r TestResult) String() string {
	switch {
	case r.Skip:
		return fmt.Sprintf("%s:%d: %s: SKIPPED", r.File, r.Row, r.Name)
	case r.Error != "":
		return fmt.Sprintf("%s:%d: %s: ERROR: %s", r.File, r.Row, r.Name, r.Error)
	case !r.Pass:
		return fmt.Sprintf("%s:%d: %s: FAIL", r.File, r.Row, r.Name)
	}
	return fmt.Sprintf("%s:%d: %s: PASS (%s)", r.File, r.Row, r.Name, r.Duration.Round(time.Microsecond))
}

// RunTests runs the test rules (test_*) of every layer's modules with OPA's tester, over
// the default policy, every layer's modules and data. The principals of the service's
// config are not in `data`: tests give their own with `with data.aziot.principals as`, so
// that a policy's verdict on its tests does not depend on the host's config.
func RunTests(ctx context.Context, layers map[string]*Layer, timeout time.Duration) ([]TestResult, error) {
	mods, err := parsedModules(layers, true)
	if err != nil {
		return nil, err
	}
	data, err := policyData(layers)
	if err != nil {
		return nil, err
	}
	return runTests(ctx, mods, data, timeout)
}

// RunDefaultTests runs the embedded tests of the default policy.
func RunDefaultTests(ctx context.Context) ([]TestResult, error) {
	return RunTests(ctx, map[string]*Layer{"builtin": {Tests: map[string]string{"builtin/default_test.rego": defaultPolicyTests}}}, DefaultTestTimeout)
}

func runTests(ctx context.Context, mods []*ast.Module, data map[string]any, timeout time.Duration) ([]TestResult, error) {
	if timeout <= 0 {
		timeout = DefaultTestTimeout
	}
	modules := make(map[string]*ast.Module, len(mods))
	for _, m := range mods {
		modules[m.Package.Location.File] = m
	}
	store := inmem.NewFromObject(data)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer store.Abort(ctx, txn)
	compiler := ast.NewCompiler().WithEnablePrintStatements(true).WithDefaultRegoVersion(ast.RegoV1)
	ch, err := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetModules(modules).
		SetTimeout(timeout).
		CapturePrintOutput(true).
		SetDefaultRegoVersion(ast.RegoV1).
		RunTests(ctx, txn)
	if err != nil {
		return nil, err
	}
	var out []TestResult
	for r := range ch {
		tr := TestResult{Name: r.Package + "." + r.Name, Pass: r.Pass(), Skip: r.Skip, Output: string(r.Output), Duration: r.Duration}
		if r.Location != nil {
			tr.File, tr.Row = r.Location.File, r.Location.Row
		}
		if r.Error != nil {
			tr.Error = r.Error.Error()
			tr.Pass = false
		}
		out = append(out, tr)
	}
	return out, nil
}

// testLayers runs the tests of every layer of s and refuses s if one fails.
func testLayers(s *snapshot, timeout time.Duration) error {
	has := false
	for _, l := range s.layers {
		if len(l.Tests) > 0 {
			has = true
		}
	}
	if !has {
		return nil
	}
	results, err := RunTests(context.Background(), s.layers, timeout)
	if err != nil {
		return fmt.Errorf("policy tests: %w", err)
	}
	var failed []string
	for _, r := range results {
		if !r.Pass && !r.Skip {
			failed = append(failed, r.String())
		}
	}
	if len(failed) > 0 {
		return errors.New("policy tests failed: " + strings.Join(failed, "; "))
	}
	return nil
}
