package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotbroker/aziot/broker/keyd"
	"github.com/iotbroker/aziot/policy"
	"github.com/iotbroker/aziot/sdk/keys"
)

// The cost of a policy decision (docs/policy.md §8, §13): the default policy and a
// 50-rule custom policy, each with and without the decision cache; and the HMAC sign
// request rate through keyd's socket with the real default policy against an allow-all
// decider, in the same run. Target: the policy's rate at least 80 % of allow-all's, and
// the p99 of a decision under 100 µs.

// decisionInputs are what keyd asks while serving a few host processes: signs with
// handles, loads by ID, from three callers.
func decisionInputs() []*policy.Input {
	var ins []*policy.Input
	for i, uid := range []uint32{0, 1001, 1002} {
		caller := policy.Caller{UID: uid, GID: uid, Groups: []uint32{uid, 2001}, PID: int32(4000 + i), Exe: "/usr/bin/edge-agent",
			Principal: map[string]any{"keys": []string{"dev-*", "module-?"}}}
		ins = append(ins,
			&policy.Input{Service: "keyd", Operation: "keyd.sign", APIVersion: "2021-05-01", Caller: caller,
				Resource: map[string]any{"key_id": "device-id", "key_kind": "key"}, Request: map[string]any{"algorithm": "HMAC-SHA256"}},
			&policy.Input{Service: "keyd", Operation: "keyd.sign", APIVersion: "2021-05-01", Caller: caller,
				Resource: map[string]any{"key_id": "module-a", "key_kind": "derived"}, Request: map[string]any{"algorithm": "HMAC-SHA256"}},
			&policy.Input{Service: "keyd", Operation: "keyd.key.load", APIVersion: "2021-05-01", Caller: caller,
				Resource: map[string]any{"key_id": "dev-1"}},
		)
	}
	return ins
}

func benchPrincipals() map[string]any {
	return policy.PrincipalData("keyd", map[uint32][]string{1001: {"dev-*", "module-?"}, 1002: {"dev-*", "other-*"}, 1003: {"*"}})
}

// fiftyRules is a custom policy of 50 rules of the kinds security teams write: deny by
// uid, by key, by executable, by group and time-free windows on operations; allow rules
// granting extra keys by group. None fires for decisionInputs except the defaults.
func fiftyRules() string {
	var b strings.Builder
	b.WriteString("package aziot.authz\n\nimport rego.v1\n\n")
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&b, "deny contains \"incident %d\" if input.caller.uid == %d\n\n", i, 2000+i)
		fmt.Fprintf(&b, "deny contains \"key %d retired\" if input.resource.key_id == \"retired-%d\"\n\n", i, i)
		fmt.Fprintf(&b, "deny contains \"exe %d\" if {\n\tinput.operation == \"keyd.sign\"\n\tinput.resource.key_id == \"restricted-%d\"\n\tinput.caller.exe != \"/usr/bin/agent-%d\"\n}\n\n", i, i, i)
		fmt.Fprintf(&b, "deny contains \"group %d\" if {\n\tinput.operation == \"keyd.keypair.create\"\n\t%d in input.caller.groups\n}\n\n", i, 3000+i)
		fmt.Fprintf(&b, "allow if {\n\tinput.service == \"keyd\"\n\tinput.operation in {\"keyd.key.load\", \"keyd.keypair.load\"}\n\t%d in input.caller.groups\n\tstartswith(input.resource.key_id, \"shared-%d-\")\n}\n\n", 4000+i, i)
	}
	return b.String()
}

// BenchmarkPolicyDecision measures one decision (Engine.Decide) per operation.
func BenchmarkPolicyDecision(b *testing.B) {
	window := measureWindow()
	ins := decisionInputs()
	results := map[string]result{}
	for _, cfg := range []struct {
		name  string
		extra map[string]string
		cache int
	}{
		{"default/cached", nil, 0},
		{"default/uncached", nil, -1},
		{"custom50/cached", map[string]string{"fifty.rego": fiftyRules()}, 0},
		{"custom50/uncached", map[string]string{"fifty.rego": fiftyRules()}, -1},
	} {
		b.Run(cfg.name, func(b *testing.B) {
			e, err := policy.NewEngine(cfg.extra, benchPrincipals())
			if err != nil {
				b.Fatal(err)
			}
			if err := e.SetCacheSize(cfg.cache); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			i := 0
			res, err := measure(1, window, func() error {
				in := ins[i%len(ins)]
				i++
				d, err := e.Decide(ctx, in)
				if err == nil && !d.Allowed() {
					err = fmt.Errorf("denied %s: %v", in.Operation, d.Deny)
				}
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			res.report(b)
			results[cfg.name] = res
		})
	}
	var sb strings.Builder
	sb.WriteString("policy decision (Engine.Decide, one goroutine, 9 rotating keyd inputs)\n| policy | cache | ns/op | p50 µs | p99 µs |\n|---|---|---|---|---|\n")
	for _, name := range []string{"default/cached", "default/uncached", "custom50/cached", "custom50/uncached"} {
		r, ok := results[name]
		if !ok {
			continue
		}
		p, c, _ := strings.Cut(name, "/")
		fmt.Fprintf(&sb, "| %s | %s | %.0f | %.1f | %.1f |\n", p, c, float64(r.elapsed.Nanoseconds())/float64(r.ops), us(r.p50), us(r.p99))
	}
	fmt.Println(sb.String())
}

// BenchmarkPolicyDecisionLargeInput measures what a caller sending big IDs pays: inputs
// whose canonical encoding passes policy.MaxCachedInputBytes are never cached (so that
// they cannot fill the cache's memory) and are evaluated every time, cache on; the
// distinct small inputs beside them show the cost of a miss that is then cached.
func BenchmarkPolicyDecisionLargeInput(b *testing.B) {
	window := measureWindow()
	e, err := policy.NewEngine(nil, benchPrincipals())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct {
		name string
		size int
	}{{"key_id=64B/distinct", 64}, {"key_id=8KiB/uncached", 8 << 10}, {"key_id=1MB/uncached", 1000000}} {
		b.Run(c.name, func(b *testing.B) {
			fill := strings.Repeat("k", c.size)
			i := 0
			res, err := measure(1, window, func() error {
				i++
				in := &policy.Input{Service: "keyd", Operation: "keyd.key.create", APIVersion: "2021-05-01",
					Caller: policy.Caller{UID: 4242, GID: 4242}, Resource: map[string]any{"key_id": fmt.Sprintf("%d-%s", i, fill)}}
				d, err := e.Decide(ctx, in)
				if err == nil && (d.Allowed() || d.Cached) {
					err = fmt.Errorf("%s: allowed or cached: %+v", c.name, d)
				}
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			res.report(b)
		})
	}
}

type allowAll struct{}

func (allowAll) Decide(context.Context, *policy.Input) (policy.Decision, error) {
	return policy.Decision{Allow: true}, nil
}

// startKeyd serves an in-process keyd on a socket of its own, with decider (nil: the real
// engine with the default policy).
func startKeyd(b *testing.B, decider policy.Decider) string {
	dir := b.TempDir()
	cfg := &keyd.Config{MaxRequests: benchMaxRequests, AziotKeys: map[string]string{"homedir_path": filepath.Join(dir, "keys")},
		Principals: []keyd.Principal{{UID: uint32(os.Getuid()), Keys: []string{"*"}}, {UID: 1001, Keys: []string{"dev-*"}}}}
	svc, err := keyd.New(cfg, keyd.Options{Decider: decider, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "keyd.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.HTTP.Serve(ctx, l); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return path
}

// BenchmarkPolicySignRate compares the HMAC sign request rate through keyd's socket with
// the real default policy (decision cache on) and with an allow-all decider, measured in
// the same run, alternating, at 1 and 8 clients.
func BenchmarkPolicySignRate(b *testing.B) {
	window := measureWindow()
	ctx := context.Background()
	message := []byte("iothub.example.net%2Fdevices%2Fbench-device\n1767225600")
	hmacKey := bytes.Repeat([]byte{0x5a}, 32)
	sockets := map[string]string{"allow-all": startKeyd(b, allowAll{}), "policy": startKeyd(b, nil)}
	handles := map[string]string{}
	for name, socket := range sockets {
		c := keys.New(socket)
		h, err := c.ImportKey(ctx, "bench-hmac", hmacKey, "sign")
		c.Close()
		if err != nil {
			b.Fatal(err)
		}
		handles[name] = h
	}
	results := map[string]result{}
	for _, c := range []int{1, 8} {
		for _, name := range []string{"allow-all", "policy", "allow-all#2", "policy#2"} {
			base, _, _ := strings.Cut(name, "#")
			key := fmt.Sprintf("%s/c=%d", name, c)
			b.Run(key, func(b *testing.B) {
				client := keys.NewWithConns(sockets[base], c)
				defer client.Close()
				res, err := measure(c, window, func() error {
					sig, err := client.SignHMAC(ctx, handles[base], message)
					if err == nil && len(sig) != 32 {
						err = fmt.Errorf("HMAC of %d bytes", len(sig))
					}
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				res.report(b)
				results[key] = res
			})
		}
	}
	var sb strings.Builder
	sb.WriteString("HMAC sign through keyd's socket (in-process keyd, sdk/keys client): real default policy vs allow-all, two alternating rounds each\n| clients | allow-all req/s | policy req/s | policy/allow-all | allow-all p99 µs | policy p99 µs |\n|---|---|---|---|---|---|\n")
	for _, c := range []int{1, 8} {
		a1, ok1 := results[fmt.Sprintf("allow-all/c=%d", c)]
		a2, ok2 := results[fmt.Sprintf("allow-all#2/c=%d", c)]
		p1, ok3 := results[fmt.Sprintf("policy/c=%d", c)]
		p2, ok4 := results[fmt.Sprintf("policy#2/c=%d", c)]
		if !ok1 || !ok2 || !ok3 || !ok4 {
			continue
		}
		a := (a1.rate() + a2.rate()) / 2
		p := (p1.rate() + p2.rate()) / 2
		fmt.Fprintf(&sb, "| %d | %.0f | %.0f | %.2f | %.0f | %.0f |\n", c, a, p, p/a, us(max(a1.p99, a2.p99)), us(max(p1.p99, p2.p99)))
	}
	fmt.Println(sb.String())
}

// The benchmarks' building blocks stay correct in `go test` (no timing asserted).
func TestPolicyBenchInputs(t *testing.T) {
	e, err := policy.NewEngine(map[string]string{"fifty.rego": fiftyRules()}, benchPrincipals())
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(fiftyRules(), "\ndeny contains") + strings.Count(fiftyRules(), "\nallow if"); n != 50 {
		t.Fatalf("%d rules", n)
	}
	for _, in := range decisionInputs() {
		d, err := e.Decide(context.Background(), in)
		if err != nil || !d.Allowed() {
			t.Fatalf("%s as %d: %+v %v", in.Operation, in.Caller.UID, d, err)
		}
	}
	start := time.Now()
	for i := 0; i < 1000; i++ {
		e.Decide(context.Background(), decisionInputs()[i%9])
	}
	t.Logf("1000 decisions in %s", time.Since(start))
}
