package policy

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// A policy whose verdict depends on each field the cache must keep apart.
const fieldPolicy = `package aziot.authz

import rego.v1

deny contains "resource" if input.resource.key_id == "blocked"
deny contains "exe" if input.caller.exe == "/bin/blocked"
deny contains "groups" if 666 in input.caller.groups
deny contains "operation" if input.operation == "keyd.encrypt"
deny contains "request" if input.request.algorithm == "ECDSA"
deny contains "gid" if input.caller.gid == 666
deny contains "principal" if "blocked" in input.caller.principal.keys
deny contains "api" if input.api_version == "2020-09-01"
`

func decideT(t *testing.T, e *Engine, in *Input) Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func baseInput() *Input {
	return &Input{Service: "keyd", Operation: "keyd.sign", APIVersion: "2021-05-01",
		Caller:   Caller{UID: 1000, GID: 1000, Groups: []uint32{1000}, PID: 10, Exe: "/bin/ok", Principal: map[string]any{"keys": []string{"dev-*"}}},
		Resource: map[string]any{"key_id": "k", "key_kind": "key"}, Request: map[string]any{"algorithm": "HMAC-SHA256"}}
}

// Two inputs that differ only in one field never share a decision.
func TestCacheKeepsInputsApart(t *testing.T) {
	e, err := NewEngine(map[string]string{"fields.rego": fieldPolicy}, principals())
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.Cacheable(); !ok {
		t.Fatal("policy not cached")
	}
	variants := map[string]func(*Input){
		"resource":  func(in *Input) { in.Resource["key_id"] = "blocked" },
		"exe":       func(in *Input) { in.Caller.Exe = "/bin/blocked" },
		"groups":    func(in *Input) { in.Caller.Groups = []uint32{1000, 666} },
		"operation": func(in *Input) { in.Operation = "keyd.encrypt" },
		"request":   func(in *Input) { in.Request["algorithm"] = "ECDSA" },
		"gid":       func(in *Input) { in.Caller.GID = 666 },
		"principal": func(in *Input) { in.Caller.Principal = map[string]any{"keys": []string{"blocked"}} },
		"api":       func(in *Input) { in.APIVersion = "2020-09-01" },
	}
	for name, change := range variants {
		// Fill the cache with the base decision, then ask the variant, then the base again.
		if d := decideT(t, e, baseInput()); !d.Allowed() {
			t.Fatalf("base denied: %+v", d)
		}
		if d := decideT(t, e, baseInput()); !d.Cached {
			t.Fatalf("base not cached")
		}
		v := baseInput()
		change(v)
		d := decideT(t, e, v)
		if d.Allowed() || d.Cached || len(d.Deny) != 1 || d.Deny[0] != name {
			t.Errorf("variant %s: %+v", name, d)
		}
		if d := decideT(t, e, v); !d.Cached || d.Deny[0] != name {
			t.Errorf("variant %s second time: %+v", name, d)
		}
		if d := decideT(t, e, baseInput()); !d.Allowed() {
			t.Errorf("base after %s: %+v", name, d)
		}
		if keyOf(baseInput(), true) == keyOf(v, true) {
			t.Errorf("variant %s has the base's key", name)
		}
	}
	// Absent and empty are different inputs.
	a, b := baseInput(), baseInput()
	a.Caller.Groups, b.Caller.Groups = nil, []uint32{}
	a.Caller.Exe = ""
	if keyOf(a, true) == keyOf(b, true) {
		t.Error("absent and empty groups share a key")
	}
	// Strings cannot run into each other.
	a, b = baseInput(), baseInput()
	a.Resource = map[string]any{"key_id": `k","key_kind":"key`}
	b.Resource = map[string]any{"key_id": "k", "key_kind": "key"}
	if keyOf(a, true) == keyOf(b, true) {
		t.Error("quoting broken")
	}
}

// The pid is in the key exactly when a module can read it.
func TestCachePID(t *testing.T) {
	e, _ := NewEngine(nil, principals())
	a, b := baseInput(), baseInput()
	b.Caller.PID = 11
	decideT(t, e, a)
	if d := decideT(t, e, b); !d.Cached {
		t.Error("the default policy does not read the pid; another pid must hit")
	}
	for _, src := range []string{
		"package aziot.authz\nimport rego.v1\ndeny contains \"pid\" if input.caller.pid == 11\n",
		"package aziot.authz\nimport rego.v1\ndeny contains \"pid\" if input.caller[\"pid\"] == 11\n",
		"package aziot.authz\nimport rego.v1\ndeny contains \"pid\" if { c := input.caller; c.pid == 11 }\n",
		"package aziot.authz\nimport rego.v1\ndeny contains \"pid\" if { some k, v in input.caller; k == \"pid\"; v == 11 }\n",
		"package aziot.authz\nimport rego.v1\ndeny contains \"pid\" if { x := input; x.caller.pid == 11 }\n",
		"package aziot.authz\nimport rego.v1\ndeny contains \"pid\" if { f := \"pid\"; input.caller[f] == 11 }\n",
	} {
		e, err := NewEngine(map[string]string{"pid.rego": src}, principals())
		if err != nil {
			t.Fatal(err)
		}
		decideT(t, e, a)
		if d := decideT(t, e, b); d.Cached || d.Allowed() {
			t.Errorf("%s: %+v", src, d)
		}
	}
}

// A policy change and a principal change take effect at once: the next decision is the
// new policy's, never a cached one.
func TestCacheInvalidatedOnChange(t *testing.T) {
	e, _ := NewEngine(nil, principals())
	load := &Input{Service: "keyd", Operation: "keyd.key.load", APIVersion: "2021-05-01", Caller: Caller{UID: 1000, GID: 1000}, Resource: map[string]any{"key_id": "dev-1"}}
	decideT(t, e, load)
	if d := decideT(t, e, load); !d.Cached || !d.Allowed() {
		t.Fatalf("%+v", d)
	}
	if err := e.SetLayer("policy.d", &Layer{Modules: map[string]string{"x.rego": "package aziot.authz\nimport rego.v1\ndeny contains \"no\" if input.caller.uid == 1000\n"}}); err != nil {
		t.Fatal(err)
	}
	if d := decideT(t, e, load); d.Cached || d.Allowed() {
		t.Fatalf("policy change: %+v", d)
	}
	e.SetLayer("policy.d", nil)
	if d := decideT(t, e, load); d.Cached || !d.Allowed() {
		t.Fatalf("policy removal: %+v", d)
	}
	decideT(t, e, load)
	if err := e.SetData(PrincipalData("keyd", map[uint32][]string{1000: {"other-*"}})); err != nil {
		t.Fatal(err)
	}
	if d := decideT(t, e, load); d.Cached || d.Allowed() {
		t.Fatalf("principal change: %+v", d)
	}
	// A refused change keeps the previous snapshot and its cache.
	decideT(t, e, load)
	if err := e.SetLayer("policy.d", &Layer{Modules: map[string]string{"bad.rego": "package aziot.authz\nallow if {"}}); err == nil {
		t.Fatal("bad policy accepted")
	}
	if d := decideT(t, e, load); !d.Cached || d.Allowed() {
		t.Fatalf("after a refused change: %+v", d)
	}
}

// A policy that reads the clock (or anything else that changes between evaluations) is
// never cached.
func TestCacheNeverForClockPolicies(t *testing.T) {
	for _, src := range []string{
		"package aziot.authz\nimport rego.v1\ndeny contains \"odd\" if time.now_ns() % 2 == 1\n",
		"package aziot.authz\nimport rego.v1\nhour := h if [h, _, _] := time.clock(time.now_ns())\ndeny contains \"late\" if hour > 25\n",
		"package aziot.authz\nimport rego.v1\nnow := time.now_ns()\ndeny contains \"x\" if now < 0\n",
		"package aziot.authz\nimport rego.v1\ndeny contains \"x\" if rand.intn(\"a\", 10) > 20\n",
		"package aziot.authz\nimport rego.v1\ndeny contains \"x\" if { [ok, _, _] := io.jwt.decode_verify(\"a.b.c\", {\"secret\": \"s\"}); ok }\n",
	} {
		e, err := NewEngine(map[string]string{"clock.rego": src}, principals())
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		ok, why := e.Cacheable()
		if ok || len(why) == 0 {
			t.Errorf("%s: cacheable", src)
		}
		in := baseInput()
		for i := 0; i < 3; i++ {
			if d := decideT(t, e, in); d.Cached {
				t.Errorf("%s: cached decision", src)
			}
		}
		if !strings.Contains(strings.Join(why, ","), ".") {
			t.Errorf("reason %v", why)
		}
	}
	// A clock-reading helper in another package still disables the cache.
	e, err := NewEngine(map[string]string{
		"lib.rego":  "package lib\nimport rego.v1\nnow := time.now_ns()\n",
		"main.rego": "package aziot.authz\nimport rego.v1\nimport data.lib\ndeny contains \"x\" if lib.now < 0\n",
	}, principals())
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.Cacheable(); ok {
		t.Error("helper package not seen")
	}
}

// The cache is bounded.
func TestCacheBounded(t *testing.T) {
	e, _ := NewEngine(nil, principals())
	if err := e.SetCacheSize(8); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		in := baseInput()
		in.Resource["key_id"] = strings.Repeat("k", i)
		decideT(t, e, in)
	}
	if n := e.cur.Load().cache.len(); n > 8 {
		t.Fatalf("%d entries", n)
	}
	if err := e.SetCacheSize(-1); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.Cacheable(); ok {
		t.Fatal("cache not disabled")
	}
}

// keyOf is the whole canonical encoding of an input, for comparing two inputs' keys.
func keyOf(in *Input, withPID bool) string {
	b, ok := encodeInput(nil, in, withPID, 0)
	if !ok {
		return ""
	}
	return string(b)
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// A caller sending many distinct big IDs cannot grow the cache: an entry holds a
// fixed-size hash, never the input, and inputs above MaxCachedInputBytes are not cached.
// Before the cache was keyed on a hash, 2000 inputs of 64 KiB kept 128 MiB alive.
func TestCacheMemoryBoundedUnderFlood(t *testing.T) {
	e, err := NewEngine(nil, principals())
	if err != nil {
		t.Fatal(err)
	}
	base := heapAlloc()
	for _, size := range []int{64 << 10, 2 << 10} {
		for i := 0; i < 2000; i++ {
			in := &Input{Service: "keyd", Operation: "keyd.key.create", APIVersion: "2021-05-01", Caller: Caller{UID: 4242, GID: 4242},
				Resource: map[string]any{"key_id": fmt.Sprintf("%08d%s", i, strings.Repeat("x", size))}}
			if d := decideT(t, e, in); d.Allowed() {
				t.Fatal("uid without a principal allowed")
			}
		}
	}
	grown := int64(heapAlloc()) - int64(base)
	c := e.cur.Load().cache
	t.Logf("heap grew by %d KiB; cache holds %d entries, about %d KiB", grown>>10, c.len(), c.size()>>10)
	if grown > 16<<20 {
		t.Fatalf("heap grew by %d MiB after a flood of big inputs", grown>>20)
	}
	if c.size() > DefaultCacheBytes {
		t.Fatalf("cache accounts %d bytes, bound %d", c.size(), DefaultCacheBytes)
	}
	runtime.KeepAlive(e)
}

// Inputs whose encoding is larger than MaxCachedInputBytes are decided every time; the
// rest is cached as before.
func TestCacheSkipsLargeInputs(t *testing.T) {
	e, _ := NewEngine(nil, principals())
	big := baseInput()
	big.Resource["key_id"] = strings.Repeat("k", MaxCachedInputBytes)
	for i := 0; i < 2; i++ {
		if d := decideT(t, e, big); d.Cached {
			t.Fatal("large input cached")
		}
	}
	if _, ok := inputKey(big, true); ok {
		t.Fatal("large input has a key")
	}
	nested := baseInput()
	nested.Request["list"] = []any{strings.Repeat("a", MaxCachedInputBytes/2), map[string]any{"b": strings.Repeat("b", MaxCachedInputBytes/2)}}
	if _, ok := inputKey(nested, true); ok {
		t.Fatal("large nested input has a key")
	}
	small := baseInput()
	decideT(t, e, small)
	if d := decideT(t, e, small); !d.Cached {
		t.Fatal("small input not cached")
	}
}

// The cache is bounded in bytes as well as in entries.
func TestCacheBoundedInBytes(t *testing.T) {
	const policy = "package aziot.authz\nimport rego.v1\ndeny contains sprintf(\"%s is refused by a long explanation\", [input.resource.key_id])\n"
	e, err := NewEngine(map[string]string{"msg.rego": policy}, principals())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetCacheBytes(64 << 10); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		in := baseInput()
		in.Resource["key_id"] = fmt.Sprintf("%04d-%s", i, strings.Repeat("m", 1000))
		decideT(t, e, in)
		if n := e.cur.Load().cache.size(); n > 64<<10 {
			t.Fatalf("cache at %d bytes", n)
		}
	}
	if e.cur.Load().cache.len() == 0 {
		t.Fatal("nothing cached")
	}
}

// The broker reads /proc for groups and exe only when a module can see them.
func TestReadsCallerFacts(t *testing.T) {
	e, _ := NewEngine(nil, principals())
	if e.ReadsCallerFacts() {
		t.Error("the default policy reads no caller facts")
	}
	for src, want := range map[string]bool{
		"package aziot.authz\nimport rego.v1\ndeny contains \"x\" if input.caller.exe == \"/bin/x\"\n":             true,
		"package aziot.authz\nimport rego.v1\ndeny contains \"x\" if 5 in input.caller.groups\n":                   true,
		"package aziot.authz\nimport rego.v1\ndeny contains \"x\" if { c := input.caller; c.exe == \"/bin/x\" }\n": true,
		"package aziot.authz\nimport rego.v1\ndeny contains \"x\" if { f := \"exe\"; input.caller[f] == \"\" }\n":  true,
		"package aziot.authz\nimport rego.v1\ndeny contains \"x\" if { x := input; x.caller.exe == \"\" }\n":       true,
		"package aziot.authz\nimport rego.v1\ndeny contains \"x\" if input.caller.uid == 5\n":                      false,
		"package aziot.authz\nimport rego.v1\ndeny contains \"x\" if input.resource.key_id == \"exe\"\n":           false,
	} {
		e, err := NewEngine(map[string]string{"x.rego": src}, principals())
		if err != nil {
			t.Fatal(err)
		}
		if got := e.ReadsCallerFacts(); got != want {
			t.Errorf("%s: ReadsCallerFacts = %v, want %v", src, got, want)
		}
	}
}
