package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
)

//go:embed default.rego
var defaultPolicy string

//go:embed default_test.rego
var defaultPolicyTests string

// DefaultModuleName is the name the embedded default policy has in errors and traces.
const DefaultModuleName = "builtin/default.rego"

// DefaultModule returns the embedded default policy's source.
func DefaultModule() string { return defaultPolicy }

// DefaultTests returns the Rego unit tests of the default policy.
func DefaultTests() string { return defaultPolicyTests }

// Query is the one query every decision evaluates.
const Query = "allow := data.aziot.authz.allow; deny := data.aziot.authz.deny"

// Layer is one source of custom policy: the policy directory, a bundle. Its modules add
// rules to the default policy; its data is merged into `data` beside the principals.
type Layer struct {
	// Source names the layer in logs and status: "policy.d", "bundle", "custom".
	Source string
	// Modules are production Rego modules, by file name (errors name these files).
	Modules map[string]string
	// Tests are *_test.rego modules; they must pass before the layer is activated.
	Tests map[string]string
	// Data is merged into the data document; it must not write data.aziot.principals.
	Data map[string]any
	// Revision is a bundle's manifest revision.
	Revision string
	// Meta is shown by status (bundle key ID, files, ...); not used by evaluation.
	Meta map[string]any
}

// layerOrder is the order of layers in compile errors and in the policy ID.
var layerOrder = []string{"bundle", "policy.d", "custom"}

// Engine evaluates a prepared query over the default policy, the custom layers and the
// data. It is safe for concurrent use; every change builds a new snapshot (a new prepared
// query and an empty decision cache) and swaps it in atomically, or keeps the previous
// one on error.
type Engine struct {
	mu  sync.Mutex // serializes changes
	cur atomic.Pointer[snapshot]

	// CacheSize bounds the decision cache (entries); 0 means DefaultCacheSize, <0 disables it.
	cacheSize int
	// cacheBytes bounds the decision cache's memory; 0 means DefaultCacheBytes.
	cacheBytes int
	// TestTimeout bounds the Rego tests run before a layer is activated.
	TestTimeout time.Duration
}

type snapshot struct {
	query      rego.PreparedEvalQuery
	principals map[string]any
	layers     map[string]*Layer
	revision   string
	policyID   string
	// cacheable is false when a module calls a builtin that reads the clock or the world.
	cacheable bool
	nondet    []string
	// keyPID is true when a module may read input.caller.pid; otherwise the pid is left
	// out of the cache key (it cannot change the decision).
	keyPID bool
	// facts is true when a module may read input.caller.groups or .exe, which cost /proc
	// reads per connection; otherwise the broker leaves them out.
	facts bool
	cache *decisionCache
}

// NewEngine prepares the default policy plus extra modules (file name → source) over data.
func NewEngine(extra map[string]string, data map[string]any) (*Engine, error) {
	e := &Engine{}
	if err := e.Update(extra, data); err != nil {
		return nil, err
	}
	return e, nil
}

// SetCacheSize sets the decision cache's bound (<0 disables the cache) from the next
// change on; it also empties the cache.
func (e *Engine) SetCacheSize(n int) error {
	e.mu.Lock()
	e.cacheSize = n
	e.mu.Unlock()
	return e.rebuild(func(*snapshot) {})
}

// SetCacheBytes sets the decision cache's memory bound (0: DefaultCacheBytes) from the
// next change on; it also empties the cache.
func (e *Engine) SetCacheBytes(n int) error {
	e.mu.Lock()
	e.cacheBytes = n
	e.mu.Unlock()
	return e.rebuild(func(*snapshot) {})
}

// Update replaces the "custom" layer's modules and the principal data. On error the
// previous policy stays.
func (e *Engine) Update(extra map[string]string, data map[string]any) error {
	var l *Layer
	if len(extra) > 0 {
		l = &Layer{Source: "custom", Modules: extra}
	}
	return e.rebuild(func(s *snapshot) {
		s.principals = data
		setLayer(s, "custom", l)
	})
}

// SetData keeps the modules and replaces the data built from the service's config
// (principals after a config reload). The decision cache starts empty.
func (e *Engine) SetData(data map[string]any) error {
	return e.rebuild(func(s *snapshot) { s.principals = data })
}

// SetLayer replaces (nil: removes) the layer named l.Source, after compiling the result
// and running the Rego tests of every layer against it. On error the previous policy
// stays in force and the error names the file.
func (e *Engine) SetLayer(source string, l *Layer) error {
	if l != nil {
		l.Source = source
	}
	return e.rebuildTested(func(s *snapshot) { setLayer(s, source, l) })
}

// SetLayers replaces several layers at once (nil values remove), as one change.
func (e *Engine) SetLayers(layers map[string]*Layer) error {
	return e.rebuildTested(func(s *snapshot) {
		for src, l := range layers {
			if l != nil {
				l.Source = src
			}
			setLayer(s, src, l)
		}
	})
}

func setLayer(s *snapshot, source string, l *Layer) {
	layers := make(map[string]*Layer, len(s.layers)+1)
	for k, v := range s.layers {
		layers[k] = v
	}
	if l == nil {
		delete(layers, source)
	} else {
		layers[source] = l
	}
	s.layers = layers
}

// Layer returns the active layer of a source (nil when none).
func (e *Engine) Layer(source string) *Layer {
	if s := e.cur.Load(); s != nil {
		return s.layers[source]
	}
	return nil
}

// Revision returns the active bundle revision ("" without a bundle).
func (e *Engine) Revision() string {
	if s := e.cur.Load(); s != nil {
		return s.revision
	}
	return ""
}

// PolicyID returns the identifier of the active policy (modules and policy data).
func (e *Engine) PolicyID() string {
	if s := e.cur.Load(); s != nil {
		return s.policyID
	}
	return ""
}

// Cacheable reports whether decisions are cached, and if not, which builtins prevent it.
func (e *Engine) Cacheable() (bool, []string) {
	if s := e.cur.Load(); s != nil {
		return s.cacheable, s.nondet
	}
	return false, nil
}

func (e *Engine) rebuild(change func(*snapshot)) error {
	return e.apply(change, false)
}

func (e *Engine) rebuildTested(change func(*snapshot)) error {
	return e.apply(change, true)
}

func (e *Engine) apply(change func(*snapshot), runTests bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	next := &snapshot{}
	if cur := e.cur.Load(); cur != nil {
		next.principals, next.layers = cur.principals, cur.layers
	}
	change(next)
	if err := compileSnapshot(next, e.cacheSize, e.cacheBytes); err != nil {
		return err
	}
	if runTests {
		if err := testLayers(next, e.TestTimeout); err != nil {
			return err
		}
	}
	e.cur.Store(next)
	return nil
}

// parseOpts are the parser options of every module: Rego v1.
var parseOpts = ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}

// parsedModules parses the default policy and the modules of every layer (tests too when
// withTests), in a stable order.
func parsedModules(layers map[string]*Layer, withTests bool) ([]*ast.Module, error) {
	def, err := ast.ParseModuleWithOpts(DefaultModuleName, defaultPolicy, parseOpts)
	if err != nil {
		return nil, fmt.Errorf("default policy: %w", err)
	}
	mods := []*ast.Module{def}
	for _, src := range sortedLayers(layers) {
		l := layers[src]
		sets := []map[string]string{l.Modules}
		if withTests {
			sets = append(sets, l.Tests)
		}
		for _, set := range sets {
			for _, name := range sortedKeys(set) {
				m, err := ast.ParseModuleWithOpts(name, set[name], parseOpts)
				if err != nil {
					return nil, err
				}
				mods = append(mods, m)
			}
		}
	}
	return mods, nil
}

func sortedLayers(layers map[string]*Layer) []string {
	var out []string
	for _, k := range layerOrder {
		if _, ok := layers[k]; ok {
			out = append(out, k)
		}
	}
	var rest []string
	for k := range layers {
		if !slices.Contains(layerOrder, k) {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// policyData merges the layers' data (principals excluded).
func policyData(layers map[string]*Layer) (map[string]any, error) {
	data := map[string]any{}
	for _, src := range sortedLayers(layers) {
		l := layers[src]
		if l.Data == nil {
			continue
		}
		if a, ok := l.Data["aziot"].(map[string]any); ok {
			if _, ok := a["principals"]; ok {
				return nil, fmt.Errorf("%s: data.aziot.principals is reserved for the principals of the service's config", src)
			}
		}
		if err := mergeInto(data, l.Data, ""); err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
	}
	return data, nil
}

func mergeInto(dst, src map[string]any, path string) error {
	for k, v := range src {
		p := path + "." + k
		if cur, ok := dst[k]; ok {
			cm, ok1 := cur.(map[string]any)
			vm, ok2 := v.(map[string]any)
			if !ok1 || !ok2 {
				return fmt.Errorf("data%s is defined twice", p)
			}
			if err := mergeInto(cm, vm, p); err != nil {
				return err
			}
			continue
		}
		dst[k] = deepCopy(v)
	}
	return nil
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, v := range x {
			m[k] = deepCopy(v)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, v := range x {
			s[i] = deepCopy(v)
		}
		return s
	}
	return v
}

func compileSnapshot(s *snapshot, cacheSize, cacheBytes int) error {
	mods, err := parsedModules(s.layers, false)
	if err != nil {
		return err
	}
	data, err := policyData(s.layers)
	if err != nil {
		return err
	}
	id := sha256.New()
	for _, src := range sortedLayers(s.layers) {
		l := s.layers[src]
		for _, name := range sortedKeys(l.Modules) {
			fmt.Fprintf(id, "%s\x00%s\x00%s\x00", src, name, l.Modules[name])
		}
		if l.Revision != "" {
			s.revision = l.Revision
		}
	}
	if b, err := json.Marshal(data); err == nil {
		id.Write(b)
	}
	s.policyID = hex.EncodeToString(id.Sum(nil))[:16]
	if len(s.layers) == 0 {
		s.policyID = "default"
	}
	if s.principals != nil {
		if err := mergeInto(data, deepCopy(s.principals).(map[string]any), ""); err != nil {
			return fmt.Errorf("principals: %w", err)
		}
	}
	opts := []func(*rego.Rego){
		rego.Query(Query),
		rego.Store(inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false))),
		rego.SetRegoVersion(ast.RegoV1),
		rego.StrictBuiltinErrors(false),
	}
	for _, m := range mods {
		opts = append(opts, rego.ParsedModule(m))
	}
	q, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		return fmt.Errorf("compile policy: %w", err)
	}
	s.query = q
	s.nondet = nondeterministicCalls(mods)
	s.cacheable = len(s.nondet) == 0 && cacheSize >= 0
	s.keyPID = readsCallerField(mods, "pid")
	s.facts = readsCallerField(mods, "groups", "exe")
	if s.cacheable {
		if cacheSize == 0 {
			cacheSize = DefaultCacheSize
		}
		if cacheBytes <= 0 {
			cacheBytes = DefaultCacheBytes
		}
		s.cache = newDecisionCache(cacheSize, cacheBytes)
	}
	return nil
}

// Decide evaluates the policy for in. An evaluation error is returned as is; callers
// must treat it as a denial (fail closed).
func (e *Engine) Decide(ctx context.Context, in *Input) (Decision, error) {
	s := e.cur.Load()
	if s == nil {
		return Decision{}, errors.New("evaluate policy: no policy")
	}
	var key cacheKey
	keyed := false
	if s.cacheable {
		key, keyed = inputKey(in, s.keyPID)
		if keyed {
			if d, ok := s.cache.get(&key); ok {
				d.Cached = true
				return d, nil
			}
		}
	}
	d, err := s.eval(ctx, in, nil)
	if err != nil {
		return Decision{}, err
	}
	if keyed {
		s.cache.put(&key, d)
	}
	return d, nil
}

func (s *snapshot) eval(ctx context.Context, in *Input, tracer topdown.QueryTracer) (Decision, error) {
	opts := []rego.EvalOption{rego.EvalParsedInput(inputValue(in))}
	if tracer != nil {
		opts = append(opts, rego.EvalQueryTracer(tracer))
	}
	rs, err := s.query.Eval(ctx, opts...)
	if err != nil {
		return Decision{}, fmt.Errorf("evaluate policy: %w", err)
	}
	if len(rs) != 1 {
		// allow or deny undefined: a custom module broke the package; fail closed.
		return Decision{}, fmt.Errorf("evaluate policy: no decision")
	}
	d := Decision{Revision: s.revision, PolicyID: s.policyID}
	allow, ok := rs[0].Bindings["allow"].(bool)
	if !ok {
		return Decision{}, fmt.Errorf("evaluate policy: allow is not a boolean")
	}
	d.Allow = allow
	reasons, ok := rs[0].Bindings["deny"].([]any)
	if !ok {
		return Decision{}, fmt.Errorf("evaluate policy: deny is not a set")
	}
	for _, r := range reasons {
		if str, ok := r.(string); ok {
			d.Deny = append(d.Deny, str)
		} else {
			b, _ := json.Marshal(r)
			d.Deny = append(d.Deny, string(b))
		}
	}
	sort.Strings(d.Deny)
	return d, nil
}

// Explain evaluates in like Decide (never from the cache) and writes OPA's trace of the
// evaluation to w: "full" (every step), "notes" (trace() notes only) or "fails" (the
// failed expressions).
func (e *Engine) Explain(ctx context.Context, in *Input, mode string, w io.Writer) (Decision, error) {
	s := e.cur.Load()
	if s == nil {
		return Decision{}, errors.New("evaluate policy: no policy")
	}
	buf := topdown.NewBufferTracer()
	d, err := s.eval(ctx, in, buf)
	events := *buf
	switch mode {
	case "notes":
		events = filterEvents(events, func(e *topdown.Event) bool { return e.Op == topdown.NoteOp })
	case "fails":
		events = filterEvents(events, func(e *topdown.Event) bool { return e.Op == topdown.FailOp })
	case "", "full":
	default:
		return d, fmt.Errorf("unknown explain mode %q (full, notes, fails)", mode)
	}
	var out bytes.Buffer
	topdown.PrettyTraceWithLocation(&out, events)
	w.Write(out.Bytes())
	return d, err
}

func filterEvents(events []*topdown.Event, keep func(*topdown.Event) bool) []*topdown.Event {
	var out []*topdown.Event
	for _, e := range events {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// clockBuiltins read the clock or the world without being flagged nondeterministic by OPA
// (they compare against the current time internally).
var clockBuiltins = map[string]bool{
	"io.jwt.decode_verify":                                   true,
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// nondeterministicCalls lists the builtins called by the modules whose result may differ
// between two evaluations of the same input: the clock, randomness, the network, the
// runtime. A policy that calls any of them is never cached.
func nondeterministicCalls(mods []*ast.Module) []string {
	found := map[string]bool{}
	check := func(ref ast.Ref) {
		name := ref.String()
		if b, ok := ast.BuiltinMap[name]; ok && (b.Nondeterministic || clockBuiltins[name]) {
			found[name] = true
		}
	}
	for _, m := range mods {
		ast.WalkExprs(m, func(x *ast.Expr) bool {
			if x.IsCall() {
				check(x.Operator())
			}
			return false
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if c, ok := t.Value.(ast.Call); ok && len(c) > 0 {
				if r, ok := c[0].Value.(ast.Ref); ok {
					check(r)
				}
			}
			return false
		})
	}
	return sortedKeys(found)
}

// ReadsCallerFacts reports whether the policy in force may read the caller's groups or
// executable (authz.FactsReader): the broker reads /proc only when it does.
func (e *Engine) ReadsCallerFacts() bool { return e.cur.Load().facts }

// readsCallerField reports whether a module may read one of input.caller's fields: a
// reference to it, or to input or input.caller as a whole (or through a variable key).
func readsCallerField(mods []*ast.Module, fields ...string) bool {
	reads := false
	inputVar := ast.InputRootDocument.Value
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		if reads {
			return true
		}
		switch v := x.(type) {
		case ast.Ref:
			start := 0
			if len(v) > 0 && v[0].Value.Compare(inputVar) == 0 {
				reads = refReachesCaller(v, fields)
				start = 1
			}
			for _, t := range v[start:] {
				vis.Walk(t)
			}
			return true
		case ast.Var:
			if v.Compare(inputVar) == 0 {
				reads = true
			}
		}
		return reads
	})
	for _, m := range mods {
		vis.Walk(m)
	}
	return reads
}

func refReachesCaller(r ast.Ref, fields []string) bool {
	if len(r) == 1 {
		return true
	}
	s, ok := r[1].Value.(ast.String)
	if !ok {
		return true
	}
	if s != "caller" {
		return false
	}
	if len(r) == 2 {
		return true
	}
	f, ok := r[2].Value.(ast.String)
	return !ok || slices.Contains(fields, string(f))
}
