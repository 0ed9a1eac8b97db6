// Package fswatch is the one reload mechanism of the services: it calls a function once
// files under watched paths changed and then stayed quiet for a debounce interval, with
// fsnotify (inotify on Linux). Configs (broker/config) and policies (policy) both use it.
package fswatch

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher watches a set of paths. Create it with New, add paths, then Run it.
type Watcher struct {
	w        *fsnotify.Watcher
	debounce time.Duration
	log      *slog.Logger
	onChange func()

	mu      sync.Mutex
	targets []target
}

type target struct {
	path      string
	recursive bool
}

// New returns a watcher that calls onChange (from Run's goroutine) after a change under
// a watched path followed by debounce without another one.
func New(debounce time.Duration, log *slog.Logger, onChange func()) (*Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("start file watcher: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Watcher{w: w, debounce: debounce, log: log, onChange: onChange}, nil
}

// Add watches path: a file (its replacement by rename counts), or a directory and its
// entries (with recursive, its whole tree; hidden directories such as .git are not
// descended into). The path need not exist: its nearest existing ancestor is watched
// until it appears, so a policy directory created after start is seen. Adding a path
// twice is harmless.
func (w *Watcher) Add(path string, recursive bool) error {
	t := target{path: filepath.Clean(path), recursive: recursive}
	w.mu.Lock()
	known := false
	for _, o := range w.targets {
		if o == t {
			known = true
		}
	}
	if !known {
		w.targets = append(w.targets, t)
	}
	w.mu.Unlock()
	return w.sync(t)
}

// sync adds the inotify watches t needs now: the parent of its path (creation, removal,
// rename of the path itself), the path when it is a directory, its subdirectories when
// recursive, or the nearest existing ancestor when the path does not exist. Watches on
// removed directories disappear by themselves; re-adding an existing watch is a no-op.
func (w *Watcher) sync(t target) error {
	st, err := os.Stat(t.path)
	if err != nil {
		anc := filepath.Dir(t.path)
		for {
			if fi, err := os.Stat(anc); err == nil && fi.IsDir() {
				break
			}
			next := filepath.Dir(anc)
			if next == anc {
				return fmt.Errorf("watch %s: no existing ancestor", t.path)
			}
			anc = next
		}
		if err := w.w.Add(anc); err != nil {
			return fmt.Errorf("watch %s (for %s): %w", anc, t.path, err)
		}
		return nil
	}
	if parent := filepath.Dir(t.path); parent != t.path {
		if err := w.w.Add(parent); err != nil {
			return fmt.Errorf("watch %s: %w", parent, err)
		}
	}
	if !st.IsDir() {
		return nil
	}
	if !t.recursive {
		if err := w.w.Add(t.path); err != nil {
			return fmt.Errorf("watch %s: %w", t.path, err)
		}
		return nil
	}
	return filepath.WalkDir(t.path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// Removed while walking: the event for it is on its way.
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		if p != t.path && strings.HasPrefix(d.Name(), ".") {
			return fs.SkipDir
		}
		if err := w.w.Add(p); err != nil {
			return fmt.Errorf("watch %s: %w", p, err)
		}
		return nil
	})
}

// relevant reports whether an event on name concerns t: the path itself, an entry below
// it (any depth when recursive), or one of its ancestors (the path may be appearing).
func (t target) relevant(name string) bool {
	if name == t.path {
		return true
	}
	if strings.HasPrefix(t.path, name+string(filepath.Separator)) {
		return true
	}
	if !strings.HasPrefix(name, t.path+string(filepath.Separator)) {
		return false
	}
	return t.recursive || filepath.Dir(name) == t.path
}

// Run delivers changes until ctx ends, then releases the watches.
func (w *Watcher) Run(ctx context.Context) {
	defer w.w.Close()
	timer := time.NewTimer(w.debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.w.Events:
			if !ok {
				return
			}
			if w.handle(ev) {
				timer.Reset(w.debounce)
			}
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			// An overflow loses events: reload anyway rather than miss a change.
			w.log.Warn("file watcher error; reloading", "err", err)
			timer.Reset(w.debounce)
		case <-timer.C:
			w.onChange()
		}
	}
}

// handle reports whether ev concerns a watched path, first adding the watches a new
// directory (or a re-created path) needs, so that files written into it are seen.
func (w *Watcher) handle(ev fsnotify.Event) bool {
	name := filepath.Clean(ev.Name)
	w.mu.Lock()
	targets := append([]target(nil), w.targets...)
	w.mu.Unlock()
	hit := false
	for _, t := range targets {
		if !t.relevant(name) {
			continue
		}
		hit = true
		if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Remove) {
			if err := w.sync(t); err != nil {
				w.log.Warn("file watcher cannot follow a change", "path", t.path, "err", err)
			}
		}
	}
	return hit
}

// Close releases the watches of a watcher that will not Run.
func (w *Watcher) Close() error { return w.w.Close() }
