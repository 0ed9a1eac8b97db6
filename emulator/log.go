package emulator

import (
	"crypto/tls"
	"sync"
	"time"
)

// AuthInfo is the parsed Authorization header of a logged request and the emulator's
// verdict on it.
type AuthInfo struct {
	Scheme  string `json:"scheme,omitempty"` // SharedAccessSignature | Basic | ""
	SR      string `json:"sr,omitempty"`
	SE      string `json:"se,omitempty"`
	SKN     string `json:"skn,omitempty"`
	User    string `json:"user,omitempty"` // Basic user
	Verdict string `json:"verdict,omitempty"`
}

// CertInfo describes the TLS client certificate of a logged request.
type CertInfo struct {
	Subject    string `json:"subject"`
	Issuer     string `json:"issuer"`
	Thumbprint string `json:"thumbprint"` // SHA-1, upper-case hex
}

// LogEntry is one request as seen by the emulator (emulator.md §6).
type LogEntry struct {
	Time         time.Time         `json:"time"`
	Listener     string            `json:"listener"` // dps | hub:<name> | est | admin
	Method       string            `json:"method"`
	Path         string            `json:"path"`
	Query        string            `json:"query"`
	Route        string            `json:"route"`
	ID           string            `json:"id,omitempty"` // registration/device ID or EST label
	Headers      map[string]string `json:"headers"`
	Auth         *AuthInfo         `json:"auth,omitempty"`
	ClientCert   *CertInfo         `json:"clientCert,omitempty"`
	Body         string            `json:"body"`
	Status       int               `json:"status"`
	ResponseBody string            `json:"responseBody"`
	Faults       []string          `json:"faults,omitempty"`
}

// loggedHeaders are the request headers kept in the log.
var loggedHeaders = []string{"Authorization", "If-Match", "Content-Type", "User-Agent", "Content-Transfer-Encoding", "Accept"}

type requestLog struct {
	mu      sync.Mutex
	entries []LogEntry
	bodyCap int
}

func (l *requestLog) add(e LogEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Bounded: the oldest half is dropped past 10,000 entries so a long-running daemon
	// does not grow without limit.
	if len(l.entries) >= 10000 {
		l.entries = append([]LogEntry(nil), l.entries[5000:]...)
	}
	l.entries = append(l.entries, e)
}

func (l *requestLog) snapshot() []LogEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LogEntry(nil), l.entries...)
}

func (l *requestLog) clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = nil
}

func (l *requestLog) capped(b []byte) string {
	if l.bodyCap > 0 && len(b) > l.bodyCap {
		return string(b[:l.bodyCap])
	}
	return string(b)
}

func certInfo(cs *tls.ConnectionState) *CertInfo {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return nil
	}
	c := cs.PeerCertificates[0]
	s1, _ := Thumbprints(c)
	return &CertInfo{Subject: c.Subject.String(), Issuer: c.Issuer.String(), Thumbprint: s1}
}
