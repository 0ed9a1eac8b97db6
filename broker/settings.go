package broker

import "time"

// Settings is our own `[broker]` table, present in every service's config and spread by
// `config apply` (architecture.md §8). Upstream keys keep their meaning beside it.
type Settings struct {
	// PolicyDir holds custom Rego policies (default /etc/aziot/policy.d).
	PolicyDir string `toml:"policy_dir"`
	// ConfigReloadDebounceMS is the quiet time before a changed config is re-read
	// (upstream: 10 s); tests shorten it.
	ConfigReloadDebounceMS int `toml:"config_reload_debounce_ms"`
	// MaxBodyBytes caps request bodies (upstream has no limit; ours defaults to 1 MiB).
	MaxBodyBytes int64 `toml:"max_body_bytes"`
}

// DefaultPolicyDir is where custom policies live on a packaged install.
const DefaultPolicyDir = "/etc/aziot/policy.d"

// ReloadDebounce returns the configured debounce or upstream's 10 s.
func (s Settings) ReloadDebounce() time.Duration {
	if s.ConfigReloadDebounceMS > 0 {
		return time.Duration(s.ConfigReloadDebounceMS) * time.Millisecond
	}
	return 10 * time.Second
}
