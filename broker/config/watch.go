package config

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch calls reload after the main file or the config directory changed and then stayed
// quiet for debounce (upstream: 10 s). Only paths that exist now are watched, as upstream.
// It returns when ctx ends.
func Watch(ctx context.Context, mainPath, dirPath string, debounce time.Duration, log *slog.Logger, reload func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	watched := 0
	if mainPath != "" {
		if _, err := os.Stat(mainPath); err == nil {
			// Watch the parent: editors replace files by rename, which drops a file watch.
			if err := w.Add(filepath.Dir(mainPath)); err == nil {
				watched++
			}
		}
	}
	if dirPath != "" {
		if st, err := os.Stat(dirPath); err == nil && st.IsDir() {
			if err := w.Add(dirPath); err == nil {
				watched++
			}
		}
	}
	if watched == 0 {
		w.Close()
		return nil
	}
	go func() {
		defer w.Close()
		var timer *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Dir(ev.Name) != filepath.Clean(dirPath) && ev.Name != filepath.Clean(mainPath) {
					continue
				}
				if timer == nil {
					timer = time.NewTimer(debounce)
				} else {
					timer.Reset(debounce)
				}
				fire = timer.C
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("config watcher error", "err", err)
			case <-fire:
				fire = nil
				reload()
			}
		}
	}()
	return nil
}
