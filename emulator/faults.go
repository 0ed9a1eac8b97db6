package emulator

import (
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Fault kinds applied per request (emulator.md §5). State-changing knobs
// (disable_enrollment, reassign, drop_device, rotate_keys, expire_now, clock_offset,
// generation_change, cert_rotation) are methods on Emulator instead.
const (
	FaultThrottle         = "throttle"
	FaultServerError      = "server_error"
	FaultDelay            = "delay"
	FaultReset            = "reset"
	FaultTLSFail          = "tls_fail"
	FaultAssignAfter      = "assign_after"
	FaultFailRegistration = "fail_registration"
	FaultESTPending       = "est_pending"
	FaultMalformed        = "malformed"
	FaultEtagConflict     = "etag_conflict"
)

// Reset points for FaultReset.
const (
	ResetBeforeRead   = "before_read"   // close before reading the request body
	ResetAfterRead    = "after_read"    // read the request, then close without answering
	ResetAfterHeaders = "after_headers" // send status and headers, then close
)

// TLS failure modes for FaultTLSFail.
const (
	TLSUntrusted = "untrusted" // leaf from a root nobody trusts
	TLSWrongHost = "wrong_host"
	TLSExpired   = "expired"
)

// Malformed variants for FaultMalformed.
const (
	MalformedContentType      = "content_type"       // DPS/Hub: text/plain; EST: wrong content type
	MalformedContentTypeUpper = "content_type_upper" // EST: Application/PKCS7-MIME
	MalformedNonJSON          = "non_json"           // body is not JSON
	MalformedMissingStatus    = "missing_status"     // DPS 202 without status
	MalformedMissingRegState  = "missing_registration_state"
	MalformedErrorCodeString  = "error_code_string" // DPS failed state with "errorCode":"400209"
	MalformedPEM              = "pem"               // EST: PEM body instead of base64
	MalformedNoCerts          = "no_certs"          // EST: certs-only without certificates
	MalformedFullChain        = "full_chain"        // EST: simpleenroll returns leaf + chain
)

// Fault is one entry of a fault plan. Empty targeting fields match everything.
type Fault struct {
	Kind string `json:"kind" toml:"kind"`

	// Targeting.
	Endpoint string `json:"endpoint,omitempty" toml:"endpoint"` // dps | hub | est | a hub name | est/<label>
	Route    string `json:"route,omitempty" toml:"route"`       // e.g. register, operation, module, events, simpleenroll
	ID       string `json:"id,omitempty" toml:"id"`             // registration or device ID (case-insensitive)
	Next     int    `json:"next,omitempty" toml:"next"`         // fire on the next N matching requests
	From     int    `json:"from,omitempty" toml:"from"`         // fire on matching requests From..To (1-based)
	To       int    `json:"to,omitempty" toml:"to"`
	// Probability in (0,1] fires at random with a generator seeded by Seed.
	Probability float64 `json:"probability,omitempty" toml:"probability"`
	Seed        uint64  `json:"seed,omitempty" toml:"seed"`

	// Parameters.
	Status       int           `json:"status,omitempty" toml:"status"`          // server_error: 500 or 503
	RetryAfter   int           `json:"retryAfter,omitempty" toml:"retry_after"` // throttle / est_pending
	Delay        time.Duration `json:"delay,omitempty" toml:"delay"`            // delay
	MidBody      bool          `json:"midBody,omitempty" toml:"mid_body"`       // delay after headers and half the body
	ResetPoint   string        `json:"resetPoint,omitempty" toml:"reset_point"` // reset
	TLSMode      string        `json:"tlsMode,omitempty" toml:"tls_mode"`       // tls_fail
	Variant      string        `json:"variant,omitempty" toml:"variant"`        // malformed
	ErrorCode    int           `json:"errorCode,omitempty" toml:"error_code"`   // fail_registration
	ErrorMessage string        `json:"errorMessage,omitempty" toml:"error_message"`
	Polls        int           `json:"polls,omitempty" toml:"polls"` // assign_after: N polls in assigning
	For          time.Duration `json:"for,omitempty" toml:"for"`     // assign_after: T in assigning
	Never        bool          `json:"never,omitempty" toml:"never"` // assign_after: never finishes

	matched int
	fired   int
	rng     *rand.Rand
}

// target describes a request for fault matching.
type target struct {
	endpoint string // dps | hub | est
	name     string // hub canonical name or est/<label>
	route    string
	id       string
}

func (f *Fault) matches(t target) bool {
	if f.Endpoint != "" && !strings.EqualFold(f.Endpoint, t.endpoint) && !strings.EqualFold(f.Endpoint, t.name) {
		return false
	}
	if f.Route != "" && f.Route != t.route {
		return false
	}
	if f.ID != "" && !strings.EqualFold(f.ID, t.id) {
		return false
	}
	return true
}

// fire counts a matching request and says whether the fault applies to it.
func (f *Fault) fire() bool {
	f.matched++
	switch {
	case f.Probability > 0:
		if f.rng == nil {
			f.rng = rand.New(rand.NewPCG(f.Seed, f.Seed^0x9e3779b97f4a7c15))
		}
		if f.rng.Float64() >= f.Probability {
			return false
		}
	case f.From > 0 || f.To > 0:
		if f.matched < f.From || (f.To > 0 && f.matched > f.To) {
			return false
		}
	case f.Next > 0:
		if f.fired >= f.Next {
			return false
		}
	}
	f.fired++
	return true
}

// faultSet holds the installed plan.
type faultSet struct {
	mu     sync.Mutex
	faults []*Fault
}

func (s *faultSet) add(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

func (s *faultSet) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// pick returns, for each kind, the first fault of the plan that fires for t. Kinds in
// `only` restrict the search (nil = all kinds except tls_fail).
func (s *faultSet) pick(t target, only ...string) map[string]*Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*Fault{}
	for _, f := range s.faults {
		if len(only) == 0 && f.Kind == FaultTLSFail {
			continue
		}
		if len(only) > 0 && !contains(only, f.Kind) {
			continue
		}
		if _, done := out[f.Kind]; done || !f.matches(t) {
			continue
		}
		if f.fire() {
			cp := *f
			out[f.Kind] = &cp
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
