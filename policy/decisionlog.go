package policy

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Decision log defaults: a file rotates at 10 MiB and 3 rotated files are kept.
const (
	DefaultDecisionLogMaxBytes = 10 << 20
	DefaultDecisionLogMaxFiles = 3
)

// DecisionEntry is one line of the decision log. It is built from the input document, so
// it holds what a policy sees and nothing else: never key bytes, handles, tokens, CSRs or
// passwords (the input never carries them; TestDecisionLogHoldsNoSecrets and the e2e
// secret grep check it).
type DecisionEntry struct {
	Time       string         `json:"time"`
	Service    string         `json:"service"`
	Operation  string         `json:"operation"`
	APIVersion string         `json:"api_version"`
	Caller     Caller         `json:"caller"`
	Resource   map[string]any `json:"resource,omitempty"`
	Request    map[string]any `json:"request,omitempty"`
	// Result is "allow", "deny", or "error" (the policy failed to evaluate: denied).
	Result   string   `json:"result"`
	Allow    bool     `json:"allow"`
	Deny     []string `json:"deny"`
	Revision string   `json:"revision"`
	PolicyID string   `json:"policy_id"`
	Cached   bool     `json:"cached"`
}

// NewDecisionEntry builds the log entry of a decision.
func NewDecisionEntry(t time.Time, in *Input, d Decision) DecisionEntry {
	e := DecisionEntry{
		Time: t.UTC().Format(time.RFC3339Nano), Service: in.Service, Operation: in.Operation, APIVersion: in.APIVersion,
		Caller: in.Caller, Resource: in.Resource, Request: in.Request,
		Allow: d.Allow, Deny: d.Deny, Revision: d.Revision, PolicyID: d.PolicyID, Cached: d.Cached,
	}
	if e.Deny == nil {
		e.Deny = []string{}
	}
	switch {
	case d.Allowed():
		e.Result = "allow"
	case !d.Allow && d.PolicyID == "" && len(d.Deny) == 0:
		e.Result = "error"
	default:
		e.Result = "deny"
	}
	return e
}

// decisionLogReportEvery rate-limits the service log line about failed decision log
// writes: a full disk fails every request, and one line per request would flood the
// journal that tells the operator about it.
const decisionLogReportEvery = time.Minute

// DecisionLog writes decisions as JSON lines to stderr or to a size-bounded rotating file.
// A failed write is counted (Failures) and reported in the service log, at most once per
// decisionLogReportEvery with the count since the last report: an audit trail must not
// stop silently.
type DecisionLog struct {
	mu   sync.Mutex
	w    io.Writer
	rf   *rotatingFile
	dest string

	// Logger receives the failure reports (slog.Default() when nil).
	Logger *slog.Logger

	failures   atomic.Uint64
	unreported uint64
	lastReport time.Time
}

// OpenDecisionLog opens the log: dest "stderr" (or "-") writes to stderr, any other value
// is a file path rotated at maxBytes keeping maxFiles old files (path.1 is the newest).
// dest "" returns nil: no decision log.
func OpenDecisionLog(dest string, maxBytes int64, maxFiles int) (*DecisionLog, error) {
	switch dest {
	case "":
		return nil, nil
	case "stderr", "-":
		return &DecisionLog{w: os.Stderr, dest: "stderr"}, nil
	}
	if maxBytes <= 0 {
		maxBytes = DefaultDecisionLogMaxBytes
	}
	if maxFiles <= 0 {
		maxFiles = DefaultDecisionLogMaxFiles
	}
	rf := &rotatingFile{path: dest, max: maxBytes, keep: maxFiles}
	if err := rf.open(); err != nil {
		return nil, err
	}
	return &DecisionLog{w: rf, rf: rf, dest: dest}, nil
}

// Hook is the function to install as broker.Service.DecisionHook.
func (l *DecisionLog) Hook(in *Input, d Decision) {
	l.Log(NewDecisionEntry(time.Now(), in, d))
}

// Log writes one entry (one line).
func (l *DecisionLog) Log(e DecisionEntry) {
	b, err := json.Marshal(e)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"time": e.Time, "service": e.Service, "operation": e.Operation, "result": e.Result, "error": "entry not encodable"})
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.w.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		l.failed(err)
	}
}

// failed counts a failed write and reports it unless one was reported recently.
func (l *DecisionLog) failed(err error) {
	l.failures.Add(1)
	l.unreported++
	now := time.Now()
	if !l.lastReport.IsZero() && now.Sub(l.lastReport) < decisionLogReportEvery {
		return
	}
	log := l.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Error("decision log write failed; decisions are not being recorded", "dest", l.dest,
		"failed_writes", l.unreported, "failed_total", l.failures.Load(), "err", err)
	l.lastReport, l.unreported = now, 0
}

// Failures returns how many entries could not be written since the log was opened.
func (l *DecisionLog) Failures() uint64 { return l.failures.Load() }

// Close closes the file.
func (l *DecisionLog) Close() error {
	if l == nil || l.rf == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rf.close()
}

type rotatingFile struct {
	path string
	max  int64
	keep int
	f    *os.File
	size int64
}

func (r *rotatingFile) open() error {
	if err := os.MkdirAll(filepath.Dir(r.path), 0o755); err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("decision log: %w", err)
	}
	r.f, r.size = f, st.Size()
	return nil
}

func (r *rotatingFile) Write(b []byte) (int, error) {
	if r.f == nil {
		if err := r.open(); err != nil {
			return 0, err
		}
	}
	if r.size > 0 && r.size+int64(len(b)) > r.max {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(b)
	r.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("decision log: %w", err)
	}
	return n, nil
}

func (r *rotatingFile) rotate() error {
	r.f.Close()
	r.f = nil
	os.Remove(r.path + "." + strconv.Itoa(r.keep))
	for i := r.keep - 1; i >= 1; i-- {
		os.Rename(r.path+"."+strconv.Itoa(i), r.path+"."+strconv.Itoa(i+1))
	}
	if err := os.Rename(r.path, r.path+".1"); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("rotate decision log: %w", err)
	}
	return r.open()
}

func (r *rotatingFile) close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
