package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/policy"
)

// PolicyOptions turns a service's [broker] settings into the policy manager's options.
func PolicyOptions(svc string, s broker.Settings, log *slog.Logger) (policy.ManagerOptions, error) {
	o := policy.ManagerOptions{
		Service:   svc,
		Dir:       s.PolicyDirOrDefault(),
		BundleDir: s.PolicyBundleDirOrDefault(),
		StateDir:  s.PolicyStateDirFor(svc),
		// policy_reload_interval_ms was the polling period; with inotify it is the quiet
		// time after a change before the policy is read again.
		Debounce: time.Duration(s.PolicyReloadIntervalMS) * time.Millisecond,
		Log:      log,
	}
	keys, err := BundleKeys(s)
	if err != nil {
		return o, err
	}
	o.Keys = keys
	if bs := s.PolicyBundleService; bs != nil && bs.URL != "" {
		o.Poll = &policy.PollOptions{
			URL:      bs.URL,
			MinDelay: time.Duration(bs.MinDelaySeconds * float64(time.Second)),
			MaxDelay: time.Duration(bs.MaxDelaySeconds * float64(time.Second)),
			Headers:  bs.Headers,
		}
	}
	return o, nil
}

// BundleKeys reads the trusted bundle keys of the settings.
func BundleKeys(s broker.Settings) (map[string]*policy.KeyConfig, error) {
	keys := map[string]*policy.KeyConfig{}
	for id, k := range s.PolicyBundleKeys {
		key := k.Key
		if k.KeyPath != "" {
			b, err := os.ReadFile(k.KeyPath)
			if err != nil {
				return nil, fmt.Errorf("policy bundle key %q: %w", id, err)
			}
			key = string(b)
		}
		if strings.TrimSpace(key) == "" {
			return nil, fmt.Errorf("policy bundle key %q: no key or key_path", id)
		}
		alg := k.Algorithm
		if alg == "" {
			alg = "RS256"
		}
		keys[id] = &policy.KeyConfig{Key: key, Algorithm: alg, Scope: k.Scope}
	}
	return keys, nil
}

// startPolicy attaches the policy directory, bundles and the decision log to a built
// service. It returns a function releasing what it opened. A service built with its own
// Decider (benchmarks) has no engine and gets nothing.
func startPolicy(ctx context.Context, u Unit, r Running, log *slog.Logger) (func(), error) {
	name := u.Name
	pr, ok := r.(PolicyRunning)
	if !ok {
		log.Warn("service has no policy engine: its default authorization only")
		return func() {}, nil
	}
	eng, settings := pr.Policy()
	if eng == nil {
		return func() {}, nil
	}
	if u.PolicyDefaults != nil {
		u.PolicyDefaults(&settings)
	}
	if settings.PolicyCacheSize != 0 {
		if err := eng.SetCacheSize(settings.PolicyCacheSize); err != nil {
			return nil, err
		}
	}
	o, err := PolicyOptions(name, settings, log)
	if err != nil {
		return nil, err
	}
	if err := policy.NewManager(eng, o).Start(ctx); err != nil {
		return nil, err
	}
	dl, err := policy.OpenDecisionLog(settings.DecisionLog, settings.DecisionLogMaxBytes, settings.DecisionLogMaxFiles)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	if dl != nil {
		dl.Logger = log
		r.HTTPService().DecisionHook = dl.Hook
	}
	return func() { dl.Close() }, nil
}
