package config

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/iotbroker/aziot/internal/fswatch"
)

// Watch calls reload after the main file or the config directory changed and then stayed
// quiet for debounce (upstream: 10 s). Only paths that exist now are watched, as upstream.
// It returns at once; watching ends with ctx. The watcher is internal/fswatch, shared
// with the policy directory so that both reload the same way.
func Watch(ctx context.Context, mainPath, dirPath string, debounce time.Duration, log *slog.Logger, reload func()) error {
	var paths []string
	if mainPath != "" {
		if _, err := os.Stat(mainPath); err == nil {
			paths = append(paths, mainPath)
		}
	}
	if dirPath != "" {
		if st, err := os.Stat(dirPath); err == nil && st.IsDir() {
			paths = append(paths, dirPath)
		}
	}
	if len(paths) == 0 {
		return nil
	}
	w, err := fswatch.New(debounce, log, reload)
	if err != nil {
		return err
	}
	for _, p := range paths {
		if err := w.Add(p, false); err != nil {
			w.Close()
			return err
		}
	}
	go w.Run(ctx)
	return nil
}
