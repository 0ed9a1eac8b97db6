package policy

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newManager(t *testing.T, dir, state string) (*Manager, *Engine, *syncBuf) {
	t.Helper()
	e, err := NewEngine(nil, principals())
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	m := NewManager(e, ManagerOptions{Service: "keyd", Dir: dir, StateDir: state, Debounce: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(logs, nil))})
	return m, e, logs
}

func signAllowed(t *testing.T, e *Engine, uid uint32) bool {
	t.Helper()
	d, err := e.Decide(context.Background(), &Input{Service: "keyd", Operation: "keyd.sign", Caller: Caller{UID: uid}, Resource: map[string]any{"key_id": "k", "key_kind": "key"}})
	if err != nil {
		t.Fatal(err)
	}
	return d.Allowed()
}

func eventually(t *testing.T, within time.Duration, cond func() bool, what string) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

const cutOff = `package aziot.authz

import rego.v1

deny contains "uid 1001 is cut off" if input.caller.uid == 1001
`

const cutOffTest = `package aziot.authz_test

import rego.v1

import data.aziot.authz

test_cut_off if {
	authz.deny["uid 1001 is cut off"] with input as {"caller": {"uid": 1001}}
}
`

func TestManagerHotReload(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policy.d")
	state := t.TempDir()
	m, e, logs := newManager(t, dir, state)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Cleanup(func() { cancel(); m.Wait() })
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if !signAllowed(t, e, 1001) {
		t.Fatal("default policy denies")
	}
	writeFile(t, filepath.Join(dir, "incident.rego"), cutOff)
	writeFile(t, filepath.Join(dir, "incident_test.rego"), cutOffTest)
	took := eventually(t, 2*time.Second, func() bool { return !signAllowed(t, e, 1001) }, "custom deny")
	t.Logf("policy change in force after %s", took)
	if !signAllowed(t, e, 1002) {
		t.Fatal("other uid denied")
	}

	t.Run("a policy that does not compile is refused, naming the file", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "broken.rego"), "package aziot.authz\nallow if {\n")
		eventually(t, 2*time.Second, func() bool { return strings.Contains(logs.String(), "broken.rego") }, "refusal logged")
		if !strings.Contains(logs.String(), "policy change refused") {
			t.Fatal(logs.String())
		}
		if signAllowed(t, e, 1001) {
			t.Fatal("previous policy lost")
		}
		os.Remove(filepath.Join(dir, "broken.rego"))
	})

	t.Run("a policy whose tests fail is refused", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "bad_test.rego"), "package aziot.authz_test\nimport rego.v1\nimport data.aziot.authz\ntest_fails if authz.allow with input as {\"service\": \"nope\", \"caller\": {\"uid\": 5}}\n")
		eventually(t, 2*time.Second, func() bool { return strings.Contains(logs.String(), "bad_test.rego") }, "test failure logged")
		if st := m.Status(); st.LastError == nil || !strings.HasSuffix(st.LastError.File, "bad_test.rego") {
			t.Fatalf("status %+v", st.LastError)
		}
		os.Remove(filepath.Join(dir, "bad_test.rego"))
	})

	t.Run("conflicting rules are refused", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "conflict.rego"), "package aziot.authz\nimport rego.v1\ndeny := \"x\"\n")
		eventually(t, 2*time.Second, func() bool { return strings.Contains(logs.String(), "conflict.rego") }, "conflict logged")
		if signAllowed(t, e, 1001) {
			t.Fatal("previous policy lost")
		}
		os.Remove(filepath.Join(dir, "conflict.rego"))
	})

	t.Run("removing the files restores the default", func(t *testing.T) {
		os.Remove(filepath.Join(dir, "incident.rego"))
		os.Remove(filepath.Join(dir, "incident_test.rego"))
		eventually(t, 2*time.Second, func() bool { return signAllowed(t, e, 1001) }, "default restored")
	})
}

// At start, a broken directory falls back to the last good policy; without one the
// service does not start.
func TestManagerStartFailsClosed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policy.d")
	state := t.TempDir()
	writeFile(t, filepath.Join(dir, "incident.rego"), cutOff)
	m, _, _ := newManager(t, dir, state)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); m.Wait() })
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	writeFile(t, filepath.Join(dir, "broken.rego"), "package aziot.authz\nallow if {\n")
	m2, e2, logs := newManager(t, dir, state)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if err := m2.Start(ctx2); err != nil {
		t.Fatal(err)
	}
	if signAllowed(t, e2, 1001) || !m2.Status().FromLastGood {
		t.Fatal("last good policy not used")
	}
	if !strings.Contains(logs.String(), "broken.rego") {
		t.Fatal(logs.String())
	}
	m3, _, _ := newManager(t, dir, t.TempDir())
	if err := m3.Start(ctx2); err == nil || !strings.Contains(err.Error(), "broken.rego") {
		t.Fatalf("started without a valid policy: %v", err)
	}
}

func TestLoadDirData(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "data.json"), `{"maintenance": {"start_hour": 2}}`)
	writeFile(t, filepath.Join(dir, "groups", "ids.json"), `{"iot-apps": 2001}`)
	writeFile(t, filepath.Join(dir, ".hidden.rego"), "not rego")
	writeFile(t, filepath.Join(dir, "x.rego~"), "not rego")
	writeFile(t, filepath.Join(dir, "README.md"), "text")
	l, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if l.Data["groups"].(map[string]any)["iot-apps"] != int64(2001) || l.Data["maintenance"] == nil {
		t.Fatalf("%v", l.Data)
	}
	writeFile(t, filepath.Join(dir, "more.json"), `{"maintenance": {"start_hour": 3}}`)
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "more.json") {
		t.Fatalf("conflict not refused: %v", err)
	}
	os.Remove(filepath.Join(dir, "more.json"))
	writeFile(t, filepath.Join(dir, "p.json"), `{"aziot": {"principals": {"keyd": {"1001": ["*"]}}}}`)
	l, err = LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := NewEngine(nil, principals())
	if err := e.SetLayer("policy.d", l); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("principals override not refused: %v", err)
	}
	if l, err := LoadDir(filepath.Join(dir, "absent")); l != nil || err != nil {
		t.Fatal(l, err)
	}
}

// Changes reach the engine through inotify, not polling: a policy in a subdirectory
// created after start, a change of a linked file's target (which changes no entry of
// policy.d), and a policy directory that did not exist at start; each in force within
// the documented 2 s.
func TestManagerWatchesSubdirsLinksAndMissingDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc", "policy.d") // created below, after start
	m, e, _ := newManager(t, dir, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); m.Wait() })
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "team", "incident.rego"), cutOff)
	eventually(t, 2*time.Second, func() bool { return !signAllowed(t, e, 1001) }, "policy in a new subdirectory")
	os.RemoveAll(filepath.Join(dir, "team"))
	eventually(t, 2*time.Second, func() bool { return signAllowed(t, e, 1001) }, "subdirectory removed")

	// Configuration management links files in from elsewhere.
	managed := filepath.Join(root, "cm", "incident.rego")
	writeFile(t, managed, "package aziot.authz\n")
	if err := os.Symlink(managed, filepath.Join(dir, "incident.rego")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, func() bool { return m.Status().Layers["policy.d"].Modules != nil }, "linked file loaded")
	writeFile(t, managed, cutOff)
	eventually(t, 2*time.Second, func() bool { return !signAllowed(t, e, 1001) }, "change of a linked file's target")
}
