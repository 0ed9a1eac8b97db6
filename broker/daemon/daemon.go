// Package daemon runs services as processes: it finds each service's config files and
// socket, builds the service, serves it on its socket and re-reads its config on change.
// cmd/aziotd uses it for the packaged services and for the all-in-one dev mode.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/broker/config"
	"github.com/iotbroker/aziot/policy"
)

// Unit is one service to run.
type Unit struct {
	// Name is the short name (keyd); systemd socket names matched are Name, aziot-<Name>,
	// aziot-<Name>.socket and <Name>.sock.
	Name       string
	ConfigFile string
	ConfigDir  string
	Socket     string
	// Build loads the config and returns the running service and how to reload it.
	Build func(mainPath, dirPath string, log *slog.Logger) (Running, error)
	// PolicyDefaults, if set, fills policy settings the config leaves empty (dev mode
	// keeps bundles and status under its state directory).
	PolicyDefaults func(*broker.Settings)
}

// Running is a built service.
type Running interface {
	HTTPService() *broker.Service
	// Reload re-reads the config files; an error keeps the previous config.
	Reload(mainPath, dirPath string) error
	// ReloadDebounce is the watcher's quiet time.
	ReloadDebounce() time.Duration
	Close()
}

// PolicyRunning is implemented by a Running whose requests a policy engine decides:
// startPolicy attaches the policy directory, bundles and decision log to it.
type PolicyRunning interface {
	// Policy returns the service's policy engine (nil when it was given another Decider)
	// and its [broker] settings.
	Policy() (*policy.Engine, broker.Settings)
}

// Starter is implemented by a Running with start-up work that needs the other services
// serving (identityd's provisioning asks keyd): Run calls Start once every socket
// answers and before "ready". When the unit is the process's only service a Start error
// ends the process (systemd restarts it, as upstream); when it shares the process, the
// error is logged, the service keeps serving, and Start is retried after StartRetry,
// doubling up to a minute, until it succeeds.
type Starter interface {
	Start(ctx context.Context) error
	StartRetry() time.Duration
}

// maxStartRetry caps the wait between Start retries.
const maxStartRetry = time.Minute

// Run starts every unit, prints "ready" to ready (if not nil) once each socket answers,
// and serves until ctx ends.
func Run(ctx context.Context, units []Unit, log *slog.Logger, ready func()) error {
	act := broker.TakeActivation()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type started struct {
		unit      Unit
		svc       Running
		l         net.Listener
		endPolicy func()
	}
	var all []started
	closeAll := func() {
		for _, s := range all {
			s.l.Close()
			s.svc.Close()
			s.endPolicy()
		}
	}
	for _, u := range units {
		ulog := log.With("service", u.Name)
		svc, err := u.Build(u.ConfigFile, u.ConfigDir, ulog)
		if err != nil {
			closeAll()
			return fmt.Errorf("start %s: %w", u.Name, err)
		}
		endPolicy, err := startPolicy(ctx, u, svc, ulog)
		if err != nil {
			svc.Close()
			closeAll()
			return fmt.Errorf("start %s: %w", u.Name, err)
		}
		l, activated, err := broker.Listen(act, u.Socket, u.Name, "aziot-"+u.Name, "aziot-"+u.Name+".socket", u.Name+".sock")
		if err != nil {
			svc.Close()
			endPolicy()
			closeAll()
			return fmt.Errorf("start %s: %w", u.Name, err)
		}
		if activated {
			ulog.Info("serving the socket passed by systemd socket activation", "addr", l.Addr().String())
		} else {
			ulog.Info("serving a socket bound by the service", "path", u.Socket)
		}
		all = append(all, started{u, svc, l, endPolicy})
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(all))
	for _, s := range all {
		s := s
		ulog := log.With("service", s.unit.Name)
		err := config.Watch(ctx, s.unit.ConfigFile, s.unit.ConfigDir, s.svc.ReloadDebounce(), ulog, func() {
			if err := s.svc.Reload(s.unit.ConfigFile, s.unit.ConfigDir); err != nil {
				ulog.Error("config change refused; keeping the previous config", "err", err)
				return
			}
			ulog.Info("config reloaded")
		})
		if err != nil {
			ulog.Warn("config watcher not started", "err", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.svc.HTTPService().Serve(ctx, s.l); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", s.unit.Name, err)
			}
		}()
	}
	for _, s := range all {
		if err := waitAnswer(ctx, s.l.Addr().String()); err != nil {
			cancel()
			wg.Wait()
			closeAll()
			return fmt.Errorf("%s does not answer: %w", s.unit.Name, err)
		}
	}
	for _, s := range all {
		st, ok := s.svc.(Starter)
		if !ok {
			continue
		}
		ulog := log.With("service", s.unit.Name)
		err := st.Start(ctx)
		if err == nil {
			continue
		}
		if len(all) == 1 {
			cancel()
			wg.Wait()
			closeAll()
			return fmt.Errorf("start %s: %w", s.unit.Name, err)
		}
		wait := st.StartRetry()
		ulog.Error("start-up failed; serving meanwhile and retrying", "err", err, "retry_in", wait)
		wg.Add(1)
		go func() {
			defer wg.Done()
			retryStart(ctx, st, wait, ulog)
		}()
	}
	if ready != nil {
		ready()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		cancel()
	}
	wg.Wait()
	closeAll()
	return err
}

// retryStart calls Start after wait, doubling the wait after each failure, until it
// succeeds or ctx ends.
func retryStart(ctx context.Context, st Starter, wait time.Duration, log *slog.Logger) {
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		err := st.Start(ctx)
		if err == nil {
			log.Info("start-up retry succeeded")
			return
		}
		if ctx.Err() != nil {
			return
		}
		wait = min(2*wait, maxStartRetry)
		log.Error("start-up retry failed", "err", err, "retry_in", wait)
	}
}

// waitAnswer sends a request that every service answers (400 for a missing api-version)
// and checks that an HTTP answer comes back.
func waitAnswer(ctx context.Context, path string) error {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	var last error
	for i := 0; i < 50; i++ {
		resp, err := client.Get("http://ready/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return last
}

// EnvOr returns the environment variable or def.
func EnvOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Logger builds the process logger from AZIOT_LOG (upstream's env_logger syntax; the
// first bare level word is used, default info).
func Logger() *slog.Logger {
	level := slog.LevelInfo
	for _, part := range strings.Split(os.Getenv("AZIOT_LOG"), ",") {
		switch strings.ToLower(strings.TrimSpace(part)) {
		case "error":
			level = slog.LevelError
		case "warn":
			level = slog.LevelWarn
		case "info":
			level = slog.LevelInfo
		case "debug", "trace":
			level = slog.LevelDebug
		default:
			continue
		}
		break
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
