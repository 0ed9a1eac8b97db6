package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/iotbroker/aziot/internal/atomicfile"
	"github.com/iotbroker/aziot/internal/fswatch"
)

// DefaultReloadDebounce is how long the policy directory and the installed bundle must be
// quiet after a change (seen by inotify) before it is read: long enough for a copy of
// several files to land whole, short enough that a change is in force well within 2 s.
const DefaultReloadDebounce = 100 * time.Millisecond

// PollOptions configure polling a bundle server with OPA's bundle service protocol.
type PollOptions struct {
	// URL is the bundle's full URL (OPA: services.<name>.url + bundles.<name>.resource).
	URL string
	// MinDelay and MaxDelay bound the random wait between two polls (OPA's
	// min_delay_seconds / max_delay_seconds; defaults 60 s and 120 s).
	MinDelay, MaxDelay time.Duration
	// Headers are sent with every request (e.g. Authorization).
	Headers map[string]string
	Client  *http.Client
}

// ManagerOptions are a service's policy settings.
type ManagerOptions struct {
	Service string
	// Dir is the policy directory (policy.d); "" for none.
	Dir string
	// BundleDir holds installed bundles (`aziotctl policy install`): <BundleDir>/active.
	BundleDir string
	// StateDir holds status.json (read by `aziotctl policy status`), lastgood.json (the
	// last policy activated, used at start when the current one is refused) and the last
	// polled bundle. "" keeps nothing.
	StateDir string
	// Keys are the trusted bundle signing keys, by key ID.
	Keys map[string]*KeyConfig
	Poll *PollOptions
	// Debounce is the quiet time after a change before it is read (DefaultReloadDebounce
	// when 0).
	Debounce time.Duration
	Log      *slog.Logger
}

// Manager keeps a service's engine in step with its policy directory, its installed bundle
// and its bundle server.
type Manager struct {
	e   *Engine
	o   ManagerOptions
	log *slog.Logger

	mu          sync.Mutex
	dirFP       string
	bundleFP    string
	etag        string
	refusedPoll string // digest of the last polled bundle refused
	watcher     *fswatch.Watcher
	status      Status
	activations int
	// running counts the watch and poll goroutines, so that Wait can outlive them.
	running sync.WaitGroup
}

// Status is what a service reports about its policy (status.json).
type Status struct {
	Service      string                 `json:"service"`
	PID          int                    `json:"pid"`
	Revision     string                 `json:"revision"`
	PolicyID     string                 `json:"policy_id"`
	ActivatedAt  time.Time              `json:"activated_at"`
	UpdatedAt    time.Time              `json:"updated_at"`
	Layers       map[string]LayerStatus `json:"layers"`
	Cache        CacheStatus            `json:"cache"`
	FromLastGood bool                   `json:"from_last_good,omitempty"`
	LastError    *StatusError           `json:"last_error,omitempty"`
	Poll         *PollStatus            `json:"poll,omitempty"`
}

// LayerStatus describes an active layer.
type LayerStatus struct {
	Revision string         `json:"revision,omitempty"`
	Modules  []string       `json:"modules"`
	Tests    []string       `json:"tests,omitempty"`
	Meta     map[string]any `json:"meta,omitempty"`
}

// CacheStatus tells whether decisions are cached.
type CacheStatus struct {
	Enabled bool     `json:"enabled"`
	Because []string `json:"disabled_by,omitempty"`
}

// StatusError is the last refused change.
type StatusError struct {
	Time    time.Time `json:"time"`
	Source  string    `json:"source"`
	File    string    `json:"file,omitempty"`
	Message string    `json:"message"`
}

// PollStatus is the state of bundle polling.
type PollStatus struct {
	// URL is the bundle URL with its query and userinfo redacted (RedactURL).
	URL      string    `json:"url"`
	ETag     string    `json:"etag,omitempty"`
	LastPoll time.Time `json:"last_poll"`
	Result   string    `json:"result"`
}

// NewManager ties e to the sources of o. Call Start before serving.
func NewManager(e *Engine, o ManagerOptions) *Manager {
	if o.Debounce <= 0 {
		o.Debounce = DefaultReloadDebounce
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Poll != nil {
		if o.Poll.MinDelay <= 0 {
			o.Poll.MinDelay = 60 * time.Second
		}
		if o.Poll.MaxDelay < o.Poll.MinDelay {
			o.Poll.MaxDelay = o.Poll.MinDelay * 2
		}
		if o.Poll.Client == nil {
			o.Poll.Client = &http.Client{Timeout: 30 * time.Second}
		}
	}
	return &Manager{e: e, o: o, log: o.Log, status: Status{Service: o.Service, PID: os.Getpid()}}
}

// Engine returns the managed engine.
func (m *Manager) Engine() *Engine { return m.e }

// Start loads the policy directory and the bundles and activates them, then watches them
// until ctx ends. If they cannot be activated, the last policy activated before (kept in
// StateDir) is used, with an error logged; with none, Start fails: a service never serves
// under a policy it was not given.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Watch before reading, so that a change made while the policy loads is seen.
	w := m.newWatcher()
	m.dirFP = DirFingerprint(m.o.Dir)
	m.bundleFP = m.installedFingerprint()
	layers, err := m.initialLayers()
	if err == nil {
		err = m.e.SetLayers(layers)
	}
	if err != nil {
		m.refused("start", err)
		lg, lerr := m.readLastGood()
		if lerr != nil || lg == nil {
			m.writeStatus()
			return fmt.Errorf("policy: %w", err)
		}
		if lerr := m.e.SetLayers(lg); lerr != nil {
			m.writeStatus()
			return fmt.Errorf("policy: %v; last good policy: %w", err, lerr)
		}
		m.log.Error("starting with the last good policy", "state_dir", m.o.StateDir)
		m.status.FromLastGood = true
		m.activated(false)
	} else {
		m.activated(true)
	}
	if w != nil {
		m.watchLinks()
		m.running.Add(1)
		go func() { defer m.running.Done(); w.Run(ctx) }()
	}
	if m.o.Poll != nil && m.o.Poll.URL != "" {
		m.running.Add(1)
		go func() { defer m.running.Done(); m.poll(ctx) }()
	}
	return nil
}

// Wait returns once the goroutines Start began have ended (after its ctx is done), so
// that nothing writes the state directory any more.
func (m *Manager) Wait() { m.running.Wait() }

func (m *Manager) initialLayers() (map[string]*Layer, error) {
	layers := map[string]*Layer{"policy.d": nil, "bundle": nil}
	if m.o.Dir != "" {
		l, err := LoadDir(m.o.Dir)
		if err != nil {
			return nil, err
		}
		layers["policy.d"] = l
	}
	inst, err := m.loadInstalled(nil)
	if err != nil {
		return nil, err
	}
	polled := m.loadPolledCache()
	switch {
	case inst != nil && polled != nil:
		if CompareRevisions(polled.Revision, inst.Revision) > 0 {
			layers["bundle"] = polled
		} else {
			layers["bundle"] = inst
		}
	case inst != nil:
		layers["bundle"] = inst
	case polled != nil:
		layers["bundle"] = polled
	}
	return layers, nil
}

// newWatcher watches the policy directory (its whole tree) and the installed bundle's
// directory (where `active` is replaced) with the services' one reload mechanism,
// internal/fswatch; every change re-reads what changed once quiet for o.Debounce. Without
// a watcher (no inotify instance left) the policy stays as loaded, which is logged.
func (m *Manager) newWatcher() *fswatch.Watcher {
	if m.o.Dir == "" && m.o.BundleDir == "" {
		return nil
	}
	w, err := fswatch.New(m.o.Debounce, m.log, func() {
		m.checkDir()
		m.checkInstalled()
	})
	if err == nil && m.o.Dir != "" {
		err = w.Add(m.o.Dir, true)
	}
	if err == nil && m.o.BundleDir != "" {
		err = w.Add(m.o.BundleDir, false)
	}
	if err != nil {
		if w != nil {
			w.Close()
		}
		m.log.Error("policy watcher not started: policy changes need a restart", "dir", m.o.Dir, "bundle_dir", m.o.BundleDir, "err", err)
		return nil
	}
	m.watcher = w
	return w
}

// watchLinks watches the targets of the policy directory's symlinks (configuration
// management links files in): a change of a target changes no entry of the directory.
func (m *Manager) watchLinks() {
	if m.watcher == nil || m.o.Dir == "" {
		return
	}
	files, _ := dirFiles(m.o.Dir)
	for _, f := range files {
		if st, err := os.Lstat(f.Path); err != nil || st.Mode()&os.ModeSymlink == 0 {
			continue
		}
		if target, err := filepath.EvalSymlinks(f.Path); err == nil {
			if err := m.watcher.Add(target, false); err != nil {
				m.log.Warn("cannot watch a linked policy file", "file", f.Path, "target", target, "err", err)
			}
		}
	}
}

func (m *Manager) checkDir() {
	if m.o.Dir == "" {
		return
	}
	fp := DirFingerprint(m.o.Dir)
	m.mu.Lock()
	same := fp == m.dirFP
	m.mu.Unlock()
	if same {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dirFP = fp
	m.watchLinks()
	l, err := LoadDir(m.o.Dir)
	if err == nil {
		err = m.e.SetLayer("policy.d", l)
	}
	if err != nil {
		m.refused("policy.d", err)
		m.writeStatus()
		return
	}
	m.log.Info("policy directory activated", "dir", m.o.Dir, "policy_id", m.e.PolicyID(), "revision", m.e.Revision())
	m.activated(true)
}

func (m *Manager) installedFingerprint() string {
	if m.o.BundleDir == "" {
		return ""
	}
	target, err := os.Readlink(filepath.Join(m.o.BundleDir, "active"))
	if err != nil {
		return ""
	}
	st, err := os.Stat(filepath.Join(m.o.BundleDir, target, "install.json"))
	if err != nil {
		return target
	}
	return fmt.Sprintf("%s:%d:%s", target, st.ModTime().UnixNano(), inode(st))
}

func (m *Manager) checkInstalled() {
	fp := m.installedFingerprint()
	m.mu.Lock()
	defer m.mu.Unlock()
	if fp == m.bundleFP {
		return
	}
	m.bundleFP = fp
	cur := m.e.Layer("bundle")
	l, err := m.loadInstalled(cur)
	if err == nil && l == nil {
		// The installed bundle was removed: keep a polled bundle, drop an installed one.
		if cur != nil && cur.Meta["source"] == "install" {
			err = m.e.SetLayer("bundle", nil)
			if err == nil {
				m.log.Info("installed bundle removed; policy deactivated", "bundle_dir", m.o.BundleDir)
				m.activated(true)
			}
		}
		if err != nil {
			m.refused("bundle", err)
			m.writeStatus()
		}
		return
	}
	if err == nil {
		err = m.e.SetLayer("bundle", l)
	}
	if err != nil {
		m.refused("bundle", err)
		m.writeStatus()
		return
	}
	m.log.Info("policy bundle activated", "source", "install", "revision", l.Revision, "key_id", l.Meta["key_id"], "forced", l.Meta["forced"])
	m.activated(true)
}

// loadInstalled reads and verifies the installed bundle; cur is the active bundle layer,
// whose revision a new one must not be below (unless the install was forced).
func (m *Manager) loadInstalled(cur *Layer) (*Layer, error) {
	if m.o.BundleDir == "" {
		return nil, nil
	}
	ib, err := ReadInstalled(m.o.BundleDir)
	if err != nil || ib == nil {
		return nil, err
	}
	vb, err := ReadBundle(ib.Raw, m.o.Keys, ib.Record.Forced)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(ib.Dir, "bundle.tar.gz"), err)
	}
	if cur != nil && !ib.Record.Forced && CompareRevisions(vb.Revision, cur.Revision) < 0 {
		return nil, fmt.Errorf("%s: bundle revision %q is lower than the active revision %q", filepath.Join(ib.Dir, "bundle.tar.gz"), vb.Revision, cur.Revision)
	}
	l := BundleLayer(vb, "install")
	l.Meta["installed_at"] = ib.Record.InstalledAt
	return l, nil
}

// ---------------------------------------------------------------- polling

func (m *Manager) poll(ctx context.Context) {
	for {
		if err := m.PollOnce(ctx); err != nil {
			m.log.Warn("bundle poll failed", "url", RedactURL(m.o.Poll.URL), "err", err)
		}
		d := m.o.Poll.MinDelay
		if span := m.o.Poll.MaxDelay - m.o.Poll.MinDelay; span > 0 {
			d += time.Duration(rand.Int64N(int64(span)))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// PollOnce asks the bundle server for the bundle once (If-None-Match with the last ETag)
// and activates a new one after verifying its signature and revision. Its errors never
// hold the URL's query or userinfo (see RedactURL).
func (m *Manager) PollOnce(ctx context.Context) error {
	return redactError(m.pollOnce(ctx), m.o.Poll.URL)
}

func (m *Manager) pollOnce(ctx context.Context) error {
	p := m.o.Poll
	shown := RedactURL(p.URL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return fmt.Errorf("bundle poll request: %w", err)
	}
	m.mu.Lock()
	etag := m.etag
	m.mu.Unlock()
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	req.Header.Set("Accept", "application/vnd.openpolicyagent.bundles, application/gzip, application/octet-stream")
	for k, v := range p.Headers {
		req.Header.Set(k, v)
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		err = redactError(err, p.URL)
		m.setPoll("error: " + err.Error())
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		m.setPoll("not modified")
		return nil
	case http.StatusOK:
	default:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		m.setPoll(fmt.Sprintf("HTTP %d", resp.StatusCode))
		return fmt.Errorf("bundle server %s answered %s", shown, resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundleBytes+1))
	if err != nil {
		err = redactError(err, p.URL)
		m.setPoll("error: " + err.Error())
		return fmt.Errorf("read bundle from %s: %w", shown, err)
	}
	newTag := resp.Header.Get("ETag")
	m.mu.Lock()
	defer m.mu.Unlock()
	sum := sha256.Sum256(raw)
	digest := hex.EncodeToString(sum[:])
	if digest == m.refusedPoll {
		// Refused before: say nothing new, ask with its ETag next time.
		m.etag = newTag
		m.setPollLocked("refused (unchanged)")
		return nil
	}
	l, err := m.polledLayer(raw, newTag)
	if err == nil && l == nil {
		// Same revision and content as the active bundle.
		m.etag = newTag
		m.setPollLocked("unchanged")
		return nil
	}
	if err == nil {
		err = m.e.SetLayer("bundle", l)
	}
	if err != nil {
		err = redactError(err, p.URL)
		m.refused("poll", err)
		m.refusedPoll = digest
		m.etag = newTag
		m.setPollLocked("refused")
		m.writeStatus()
		return err
	}
	m.etag = newTag
	m.savePolled(raw, newTag)
	m.log.Info("policy bundle activated", "source", "poll", "url", shown, "revision", l.Revision, "key_id", l.Meta["key_id"])
	m.setPollLocked("activated")
	m.activated(true)
	return nil
}

func (m *Manager) polledLayer(raw []byte, etag string) (*Layer, error) {
	vb, err := ReadBundle(raw, m.o.Keys, false)
	if err != nil {
		return nil, err
	}
	if vb.Revision == "" {
		return nil, refuse(false, "bundle has no revision in its .manifest; refused")
	}
	if cur := m.e.Layer("bundle"); cur != nil {
		c := CompareRevisions(vb.Revision, cur.Revision)
		if c < 0 {
			return nil, refuse(false, "bundle revision %q is lower than the active revision %q", vb.Revision, cur.Revision)
		}
		if c == 0 {
			if cur.Meta["sha256"] == vb.SHA256 {
				return nil, nil
			}
			return nil, refuse(false, "bundle revision %q is active with other content", vb.Revision)
		}
	}
	vb.Bundle.Etag = etag
	return BundleLayer(vb, "poll"), nil
}

func (m *Manager) setPoll(result string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setPollLocked(result)
}

func (m *Manager) setPollLocked(result string) {
	prev := m.status.Poll
	m.status.Poll = &PollStatus{URL: RedactURL(m.o.Poll.URL), ETag: m.etag, LastPoll: time.Now().UTC(), Result: result}
	// status.json shows a failing server; rewriting it on every unchanged poll would
	// only wear the disk.
	if prev == nil || prev.Result != result || prev.ETag != m.etag {
		m.writeStatus()
	}
}

func (m *Manager) polledDir() string {
	if m.o.StateDir == "" {
		return ""
	}
	return filepath.Join(m.o.StateDir, "polled")
}

func (m *Manager) savePolled(raw []byte, etag string) {
	dir := m.polledDir()
	if dir == "" {
		return
	}
	err := atomicfile.MkdirAll(dir, 0o700)
	if err == nil {
		err = atomicfile.Write(filepath.Join(dir, "bundle.tar.gz"), raw, 0o600)
	}
	if err == nil {
		err = atomicfile.Write(filepath.Join(dir, "etag"), []byte(etag), 0o600)
	}
	if err != nil {
		m.log.Warn("cannot keep the polled bundle", "err", err)
	}
}

// loadPolledCache reads the last polled bundle kept in StateDir (verified again).
func (m *Manager) loadPolledCache() *Layer {
	dir := m.polledDir()
	if dir == "" {
		return nil
	}
	raw, err := os.ReadFile(filepath.Join(dir, "bundle.tar.gz"))
	if err != nil {
		return nil
	}
	vb, err := ReadBundle(raw, m.o.Keys, false)
	if err != nil {
		m.log.Warn("kept polled bundle refused", "err", err)
		return nil
	}
	etag, _ := os.ReadFile(filepath.Join(dir, "etag"))
	vb.Bundle.Etag = string(etag)
	m.etag = string(etag)
	return BundleLayer(vb, "poll")
}

// ---------------------------------------------------------------- status

var fileInError = regexp.MustCompile(`(?:^|[\s:(])((?:/|bundle:)[^\s:]+\.(?:rego|json|gz))`)

// ErrorFile finds the file an error is about.
func ErrorFile(err error) string {
	var aerrs ast.Errors
	if errors.As(err, &aerrs) && len(aerrs) > 0 && aerrs[0].Location != nil {
		return aerrs[0].Location.File
	}
	var aerr *ast.Error
	if errors.As(err, &aerr) && aerr.Location != nil {
		return aerr.Location.File
	}
	if m := fileInError.FindStringSubmatch(err.Error()); m != nil {
		return m[1]
	}
	return ""
}

func (m *Manager) refused(source string, err error) {
	file := ErrorFile(err)
	m.log.Error("policy change refused; keeping the previous policy", "source", source, "file", file, "err", err)
	m.status.LastError = &StatusError{Time: time.Now().UTC(), Source: source, File: file, Message: err.Error()}
}

func (m *Manager) activated(saveLastGood bool) {
	m.activations++
	m.status.ActivatedAt = time.Now().UTC()
	m.status.Revision = m.e.Revision()
	m.status.PolicyID = m.e.PolicyID()
	m.status.Layers = map[string]LayerStatus{}
	for _, src := range []string{"bundle", "policy.d"} {
		if l := m.e.Layer(src); l != nil {
			m.status.Layers[src] = LayerStatus{Revision: l.Revision, Modules: sortedKeys(l.Modules), Tests: sortedKeys(l.Tests), Meta: l.Meta}
		}
	}
	ok, because := m.e.Cacheable()
	m.status.Cache = CacheStatus{Enabled: ok, Because: because}
	if saveLastGood {
		m.status.FromLastGood = false
		m.saveLastGood()
	}
	m.writeStatus()
}

// Status returns the current status.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

func (m *Manager) writeStatus() {
	m.status.UpdatedAt = time.Now().UTC()
	if m.o.StateDir == "" {
		return
	}
	if err := atomicfile.MkdirAll(m.o.StateDir, 0o755); err != nil {
		m.log.Warn("cannot write the policy status", "err", err)
		return
	}
	b, _ := json.MarshalIndent(m.status, "", "  ")
	if err := atomicfile.Write(filepath.Join(m.o.StateDir, "status.json"), append(b, '\n'), 0o640); err != nil {
		m.log.Warn("cannot write the policy status", "err", err)
	}
}

type lastGood struct {
	Layers map[string]*Layer `json:"layers"`
}

func (m *Manager) saveLastGood() {
	if m.o.StateDir == "" {
		return
	}
	lg := lastGood{Layers: map[string]*Layer{}}
	for _, src := range []string{"bundle", "policy.d"} {
		if l := m.e.Layer(src); l != nil {
			lg.Layers[src] = l
		}
	}
	b, err := json.Marshal(lg)
	if err != nil {
		m.log.Warn("cannot keep the last good policy", "err", err)
		return
	}
	err = atomicfile.MkdirAll(m.o.StateDir, 0o755)
	if err == nil {
		err = atomicfile.Write(filepath.Join(m.o.StateDir, "lastgood.json"), b, 0o600)
	}
	if err != nil {
		m.log.Warn("cannot keep the last good policy", "err", err)
	}
}

func (m *Manager) readLastGood() (map[string]*Layer, error) {
	if m.o.StateDir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(m.o.StateDir, "lastgood.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var lg lastGood
	if err := json.Unmarshal(b, &lg); err != nil {
		return nil, err
	}
	layers := map[string]*Layer{"bundle": nil, "policy.d": nil}
	for k, v := range lg.Layers {
		layers[k] = v
	}
	return layers, nil
}
