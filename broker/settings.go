package broker

import "time"

// Settings is our own `[broker]` table, present in every service's config and spread by
// `config apply` (architecture.md §8). Upstream keys keep their meaning beside it.
type Settings struct {
	// PolicyDir holds custom Rego policies (default /etc/aziot/policy.d).
	PolicyDir string `toml:"policy_dir"`
	// PolicyBundleDir holds the bundle installed by `aziotctl policy install` (its
	// `active` link); default /var/lib/aziot/policy.
	PolicyBundleDir string `toml:"policy_bundle_dir"`
	// PolicyStateDir holds the service's policy status (read by `aziotctl policy status`),
	// its last good policy and its last polled bundle; default /var/lib/aziot/<svc>/policy.
	PolicyStateDir string `toml:"policy_state_dir"`
	// PolicyReloadIntervalMS is the quiet time after a change to the policy directory or
	// the installed bundle (seen through inotify) before it is reloaded (default 100 ms).
	PolicyReloadIntervalMS int `toml:"policy_reload_interval_ms"`
	// PolicyCacheSize bounds the decision cache (default 4096 entries; -1 disables it).
	PolicyCacheSize int `toml:"policy_cache_size"`
	// PolicyBundleKeys are the keys trusted to sign policy bundles, by key ID (the `kid`
	// of the bundle's signature).
	PolicyBundleKeys map[string]BundleKey `toml:"policy_bundle_keys"`
	// PolicyBundleService, if set, is polled for bundles (OPA's bundle service protocol).
	PolicyBundleService *BundleService `toml:"policy_bundle_service"`
	// DecisionLog is "" (off), "stderr", or a file path (JSON lines, rotated).
	DecisionLog string `toml:"decision_log"`
	// DecisionLogMaxBytes and DecisionLogMaxFiles bound a decision log file (defaults
	// 10 MiB and 3 rotated files).
	DecisionLogMaxBytes int64 `toml:"decision_log_max_bytes"`
	DecisionLogMaxFiles int   `toml:"decision_log_max_files"`

	// ConfigReloadDebounceMS is the quiet time before a changed config is re-read
	// (upstream: 10 s); tests shorten it.
	ConfigReloadDebounceMS int `toml:"config_reload_debounce_ms"`
	// ProvisioningRetryMS is identityd's first wait before it retries a failed start-up
	// provisioning when it shares the process with other services (`aziotd dev`); the
	// wait doubles up to a minute. Default 5 s; tests shorten it. Other services ignore it.
	ProvisioningRetryMS int `toml:"provisioning_retry_ms"`
	// MaxBodyBytes caps request bodies (upstream has no limit; ours defaults to 1 MiB).
	MaxBodyBytes int64 `toml:"max_body_bytes"`
}

// BundleKey is a trusted bundle signing key, as OPA's `keys` configuration has it.
type BundleKey struct {
	// Algorithm is the JWS algorithm: RS256/384/512, PS256/384/512, ES256/384/512,
	// HS256/384/512 (default RS256, as OPA).
	Algorithm string `toml:"algorithm"`
	// Key is the PEM public key or certificate (or the HMAC secret); KeyPath reads it from
	// a file instead.
	Key     string `toml:"key"`
	KeyPath string `toml:"key_path"`
	// Scope must equal the scope claim of the signature (default none).
	Scope string `toml:"scope"`
}

// BundleService is a bundle server to poll.
type BundleService struct {
	// URL is the bundle's full URL.
	URL string `toml:"url"`
	// MinDelaySeconds and MaxDelaySeconds bound the wait between polls (OPA's names;
	// defaults 60 and 120).
	MinDelaySeconds float64 `toml:"min_delay_seconds"`
	MaxDelaySeconds float64 `toml:"max_delay_seconds"`
	// Headers are sent with every request (e.g. Authorization).
	Headers map[string]string `toml:"headers"`
}

// Defaults of the policy settings on a packaged install.
const (
	DefaultPolicyDir       = "/etc/aziot/policy.d"
	DefaultPolicyBundleDir = "/var/lib/aziot/policy"
)

// PolicyDirOrDefault returns the policy directory.
func (s Settings) PolicyDirOrDefault() string {
	if s.PolicyDir != "" {
		return s.PolicyDir
	}
	return DefaultPolicyDir
}

// PolicyBundleDirOrDefault returns the installed-bundle directory.
func (s Settings) PolicyBundleDirOrDefault() string {
	if s.PolicyBundleDir != "" {
		return s.PolicyBundleDir
	}
	return DefaultPolicyBundleDir
}

// PolicyStateDirFor returns the policy state directory of service svc.
func (s Settings) PolicyStateDirFor(svc string) string {
	if s.PolicyStateDir != "" {
		return s.PolicyStateDir
	}
	return "/var/lib/aziot/" + svc + "/policy"
}

// ReloadDebounce returns the configured debounce or upstream's 10 s.
func (s Settings) ReloadDebounce() time.Duration {
	if s.ConfigReloadDebounceMS > 0 {
		return time.Duration(s.ConfigReloadDebounceMS) * time.Millisecond
	}
	return 10 * time.Second
}
