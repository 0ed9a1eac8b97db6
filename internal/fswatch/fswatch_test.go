package fswatch

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// start runs a watcher on paths and returns a channel that receives once per onChange.
func start(t *testing.T, recursive bool, paths ...string) <-chan struct{} {
	t.Helper()
	changes := make(chan struct{}, 100)
	w, err := New(20*time.Millisecond, nil, func() { changes <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if err := w.Add(p, recursive); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return changes
}

// waitChange fails unless a change is reported within 2 s (the policy reload promise).
func waitChange(t *testing.T, changes <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-changes:
	case <-time.After(2 * time.Second):
		t.Fatalf("%s: no change reported within 2 s", what)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFileReplacedByRename(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "config.toml")
	write(t, main, "a")
	changes := start(t, false, main)
	tmp := filepath.Join(dir, ".config.toml.tmp")
	write(t, tmp, "b")
	if err := os.Rename(tmp, main); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "rename onto the file")
	// The watch survives the rename: a second replacement is seen too.
	write(t, tmp, "c")
	if err := os.Rename(tmp, main); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "second rename")
}

// Policies may live in subdirectories, created after start; a watched directory may not
// exist yet.
func TestRecursiveAndMissing(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc", "policy.d")
	changes := start(t, true, dir)
	if err := os.MkdirAll(filepath.Join(dir, "team", "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "directory created")
	write(t, filepath.Join(dir, "team", "deep", "x.rego"), "package x")
	waitChange(t, changes, "file in a new subdirectory")
	write(t, filepath.Join(dir, "team", "deep", "x.rego"), "package y")
	waitChange(t, changes, "file rewritten")
	if err := os.RemoveAll(filepath.Join(dir, "team")); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "subdirectory removed")
	// The directory itself removed and created again.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "directory removed")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "y.rego"), "package y")
	waitChange(t, changes, "file in the re-created directory")
}

// A burst of writes is one change once quiet, not one per write.
func TestDebounce(t *testing.T) {
	dir := t.TempDir()
	var calls atomic.Int32
	w, err := New(300*time.Millisecond, nil, func() { calls.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(dir, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for i := 0; i < 20; i++ {
		write(t, filepath.Join(dir, "f"), string(rune('a'+i)))
	}
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no change reported")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := calls.Load(); n > 2 {
		t.Fatalf("%d changes reported for one burst", n)
	}
}

func TestRelevant(t *testing.T) {
	rec := target{path: "/etc/aziot/policy.d", recursive: true}
	flat := target{path: "/etc/aziot/keyd/config.d"}
	file := target{path: "/etc/aziot/keyd/config.toml"}
	for _, c := range []struct {
		t    target
		name string
		want bool
	}{
		{rec, "/etc/aziot/policy.d", true},
		{rec, "/etc/aziot/policy.d/a.rego", true},
		{rec, "/etc/aziot/policy.d/team/a.rego", true},
		{rec, "/etc/aziot", true}, // an ancestor appearing
		{rec, "/etc/aziot/policy.d2", false},
		{rec, "/etc/aziot/keyd", false},
		{flat, "/etc/aziot/keyd/config.d/x.toml", true},
		{flat, "/etc/aziot/keyd/config.d/sub/x.toml", false},
		{file, "/etc/aziot/keyd/config.toml", true},
		{file, "/etc/aziot/keyd/config.toml.bak", false},
		{file, "/etc/aziot/keyd/config.d", false},
	} {
		if got := c.t.relevant(c.name); got != c.want {
			t.Errorf("%+v relevant(%s) = %v", c.t, c.name, got)
		}
	}
}
