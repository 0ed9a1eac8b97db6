package broker

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iotbroker/aziot/policy/authz"
)

// decider answers every decision with allow and counts them.
type decider struct {
	allow bool
	n     atomic.Int64
}

func (d *decider) Decide(_ context.Context, in *authz.Input) (authz.Decision, error) {
	d.n.Add(1)
	return authz.Decision{Allow: d.allow}, nil
}

// serve runs svc on a socket in a temp dir and returns a client for it.
func serve(t *testing.T, svc *Service) *http.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := bindUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
}

func get(t *testing.T, c *http.Client, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://s"+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m struct{ Message string }
	json.Unmarshal(b, &m)
	return resp.StatusCode, m.Message
}

// The core, not the handler, makes the decision: a denied request never reaches Serve,
// a handler that declares no operation answers 500 and is never served, and a Resolve
// that names nothing to decide on is refused.
func TestAuthorizationIsAPipelineStep(t *testing.T) {
	var served atomic.Int64
	serveOK := func(*Request) (Reply, error) { served.Add(1); return Reply{Body: map[string]string{"ok": "yes"}}, nil }
	d := &decider{}
	svc := &Service{
		Name: "test", Versions: []string{"v1"}, Decider: d,
		Denied: func(r *Request, t Target) *Error { return Unauthorized("no " + t.Resource["id"].(string)) },
		Routes: []Route{
			{Pattern: "/declared/{id}", Get: &Handler{Operation: "test.get", Serve: serveOK,
				Resolve: func(r *Request) ([]Target, error) {
					return []Target{{Resource: map[string]any{"id": r.Params["id"]}}}, nil
				}}},
			{Pattern: "/undeclared", Get: &Handler{Serve: serveOK}},
			{Pattern: "/nothing", Get: &Handler{Operation: "test.nothing", Serve: serveOK,
				Resolve: func(*Request) ([]Target, error) { return nil, nil }}},
			{Pattern: "/early", Get: &Handler{Operation: "test.early", Serve: serveOK,
				Resolve: func(*Request) ([]Target, error) { return nil, BadRequest("refused before") }}},
			{Pattern: "/two", Get: &Handler{Operation: "test.two", Serve: serveOK,
				Resolve: func(*Request) ([]Target, error) {
					return []Target{{Resource: map[string]any{"id": "a"}}, {Resource: map[string]any{"id": "b"}}}, nil
				}}},
			{Pattern: "/either", Get: &Handler{Operation: "test.either", AnyOf: true, Serve: serveOK,
				Resolve: func(*Request) ([]Target, error) {
					return []Target{{Resource: map[string]any{"id": "a"}}, {Resource: map[string]any{"id": "b"}}}, nil
				}}},
		},
	}
	c := serve(t, svc)
	cases := []struct {
		path      string
		allow     bool
		status    int
		msg       string
		decisions int64
		served    bool
	}{
		{"/declared/x?api-version=v1", false, 401, "no x", 1, false},
		{"/declared/x?api-version=v1", true, 200, "", 1, true},
		{"/undeclared?api-version=v1", true, 500, "internal error", 0, false},
		{"/nothing?api-version=v1", true, 500, "internal error", 0, false},
		{"/early?api-version=v1", false, 400, "refused before", 0, false},
		{"/two?api-version=v1", false, 401, "no a", 1, false},
		{"/two?api-version=v1", true, 200, "", 2, true},
		{"/either?api-version=v1", true, 200, "", 1, true},
		{"/either?api-version=v1", false, 401, "no b", 2, false},
	}
	for _, tc := range cases {
		d.allow = tc.allow
		d.n.Store(0)
		served.Store(0)
		status, msg := get(t, c, "GET", tc.path)
		if status != tc.status || msg != tc.msg || d.n.Load() != tc.decisions || (served.Load() == 1) != tc.served {
			t.Errorf("%s allow=%v: got %d %q, %d decisions, served %d; want %d %q, %d, %v",
				tc.path, tc.allow, status, msg, d.n.Load(), served.Load(), tc.status, tc.msg, tc.decisions, tc.served)
		}
	}
}

// The socket is never reachable with another mode than 0660, whatever the umask: a
// watcher that stats the path while the service rebinds it sees nothing else.
func TestSocketCreatedWithItsFinalMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "keyd.sock")
	var stop atomic.Bool
	var bad atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 && st.Mode().Perm() != 0o660 {
				bad.Store(st.Mode().String())
			}
		}
	}()
	for i := 0; i < 300; i++ {
		l, err := bindUnix(path)
		if err != nil {
			t.Fatal(err)
		}
		if l.Addr().String() != path {
			t.Fatalf("listener reports %q, want %q", l.Addr(), path)
		}
		l.Close()
	}
	stop.Store(true)
	wg.Wait()
	if m := bad.Load(); m != nil {
		t.Fatalf("socket seen with mode %v", m)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("leftovers beside the socket: %v", entries)
	}
	// A connection through the final path reaches the listener.
	l, err := bindUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the moved socket: %v", err)
	}
	c.Close()
}

func TestLogLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLogLimiter(3, time.Second)
	l.now = func() time.Time { return now }
	var written []int
	for i := 0; i < 10; i++ {
		if n, ok := l.allow(); ok {
			written = append(written, n)
		}
	}
	if len(written) != 3 {
		t.Fatalf("%d lines in one window, want 3", len(written))
	}
	now = now.Add(time.Second)
	n, ok := l.allow()
	if !ok || n != 7 {
		t.Fatalf("after the window: ok=%v suppressed=%d, want 7", ok, n)
	}
	if n, ok := l.allow(); !ok || n != 0 {
		t.Fatalf("suppressed count not reset: %d", n)
	}
}

// At its user's limit, a new connection takes the slot of the longest-idle one; with no
// idle connection it is refused.
func TestThrottleEvictsIdleBeforeRefusing(t *testing.T) {
	th := newThrottle(2)
	a, b, c := &conn{uid: 7}, &conn{uid: 7}, &conn{uid: 7}
	for _, x := range []*conn{a, b} {
		if _, ok := th.acquire(x); !ok {
			t.Fatal("refused under the limit")
		}
	}
	if _, ok := th.acquire(c); ok {
		t.Fatal("third active connection accepted")
	}
	if _, ok := th.acquire(&conn{uid: 8}); !ok {
		t.Fatal("another uid refused")
	}
	th.setIdle(b, true) // b goes idle first: it has waited longer
	th.setIdle(a, true)
	ev, ok := th.acquire(c)
	if !ok || ev != b {
		t.Fatalf("got %v %v, want the longest-idle connection evicted", ev, ok)
	}
	if th.setIdle(b, false) {
		t.Fatal("an evicted connection may serve again")
	}
	if n := th.count(7); n != 2 {
		t.Fatalf("uid 7 holds %d slots", n)
	}
	th.release(b) // its Close after eviction: nothing left to release
	if n := th.count(7); n != 2 {
		t.Fatalf("uid 7 holds %d slots after the evicted close", n)
	}
}

// AnyOf asks its targets in order until one is allowed, and says which.
func TestAnyOfStopsAtTheFirstAllowed(t *testing.T) {
	d := &onlyID{allow: "b"}
	var allowed atomic.Int64
	svc := &Service{Name: "test", Versions: []string{"v1"}, Decider: d,
		Routes: []Route{{Pattern: "/either", Get: &Handler{Operation: "test.either", AnyOf: true,
			Resolve: func(*Request) ([]Target, error) {
				return []Target{{Resource: map[string]any{"id": "a"}}, {Resource: map[string]any{"id": "b"}}, {Resource: map[string]any{"id": "c"}}}, nil
			},
			Serve: func(r *Request) (Reply, error) { allowed.Store(int64(r.Allowed)); return Reply{}, nil }}}}}
	c := serve(t, svc)
	if status, _ := get(t, c, "GET", "/either?api-version=v1"); status != 204 || allowed.Load() != 1 || d.asked.Load() != 2 {
		t.Fatalf("status %d, allowed target %d after %d decisions; want 204, 1, 2", status, allowed.Load(), d.asked.Load())
	}
}

// onlyID allows the target whose resource id is allow.
type onlyID struct {
	allow string
	asked atomic.Int64
}

func (d *onlyID) Decide(_ context.Context, in *authz.Input) (authz.Decision, error) {
	d.asked.Add(1)
	return authz.Decision{Allow: in.Resource["id"] == d.allow}, nil
}

// count is the number of connections uid holds (tests).
func (t *throttle) count(uid uint32) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.active[uid])
}
