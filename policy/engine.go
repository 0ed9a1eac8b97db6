package policy

import (
	"context"
	_ "embed"
	"fmt"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

//go:embed default.rego
var defaultPolicy string

// DefaultModule returns the embedded default policy's source.
func DefaultModule() string { return defaultPolicy }

// Decision is the answer of the policy for one input.
type Decision struct {
	Allow bool
	// Deny holds the reasons of every deny rule that fired; never sent to the caller.
	Deny []string
}

// Allowed reports whether the request may go on: allow is true and nothing denies it.
func (d Decision) Allowed() bool { return d.Allow && len(d.Deny) == 0 }

// Decider is what the services ask; tests and benchmarks may substitute their own.
type Decider interface {
	Decide(ctx context.Context, in *Input) (Decision, error)
}

// Engine evaluates a prepared query over a set of modules and data. It is safe for
// concurrent use; Update swaps the prepared query atomically.
type Engine struct {
	mu      sync.RWMutex
	query   rego.PreparedEvalQuery
	modules map[string]string
	data    map[string]any
}

// NewEngine prepares the default policy plus extra modules (file name → source) over data.
func NewEngine(extra map[string]string, data map[string]any) (*Engine, error) {
	e := &Engine{}
	if err := e.Update(extra, data); err != nil {
		return nil, err
	}
	return e, nil
}

// Update replaces the custom modules and the data. On error the previous policy stays.
func (e *Engine) Update(extra map[string]string, data map[string]any) error {
	modules := map[string]string{"default.rego": defaultPolicy}
	for name, src := range extra {
		modules[name] = src
	}
	if data == nil {
		data = map[string]any{}
	}
	q, err := prepare(modules, data)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.query, e.modules, e.data = q, modules, data
	e.mu.Unlock()
	return nil
}

// SetData keeps the modules and replaces the data (principals after a config reload).
func (e *Engine) SetData(data map[string]any) error {
	e.mu.RLock()
	modules := e.modules
	e.mu.RUnlock()
	extra := map[string]string{}
	for k, v := range modules {
		if k != "default.rego" {
			extra[k] = v
		}
	}
	return e.Update(extra, data)
}

func prepare(modules map[string]string, data map[string]any) (rego.PreparedEvalQuery, error) {
	opts := []func(*rego.Rego){
		rego.Query("allow := data.aziot.authz.allow; deny := data.aziot.authz.deny"),
		rego.Store(inmem.NewFromObject(data)),
		rego.SetRegoVersion(ast.RegoV1),
	}
	for name, src := range modules {
		opts = append(opts, rego.Module(name, src))
	}
	q, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		return rego.PreparedEvalQuery{}, fmt.Errorf("prepare policy: %w", err)
	}
	return q, nil
}

// Decide evaluates the policy for in. An evaluation error is returned as is; callers
// must treat it as a denial (fail closed).
func (e *Engine) Decide(ctx context.Context, in *Input) (Decision, error) {
	e.mu.RLock()
	q := e.query
	e.mu.RUnlock()
	rs, err := q.Eval(ctx, rego.EvalParsedInput(in.Value()))
	if err != nil {
		return Decision{}, fmt.Errorf("evaluate policy: %w", err)
	}
	if len(rs) != 1 {
		// allow or deny undefined: a custom module broke the package; fail closed.
		return Decision{}, fmt.Errorf("evaluate policy: no decision")
	}
	var d Decision
	d.Allow, _ = rs[0].Bindings["allow"].(bool)
	if reasons, ok := rs[0].Bindings["deny"].([]any); ok {
		for _, r := range reasons {
			d.Deny = append(d.Deny, fmt.Sprint(r))
		}
	}
	return d, nil
}
