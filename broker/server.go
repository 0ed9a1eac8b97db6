// Package broker is the core every service shares (api-keys.md §1): HTTP/1.1 on a Unix
// socket, peer credentials on every connection, per-UID throttling, api-version routing,
// upstream's body rules and error body, and the policy decision.
package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iotbroker/aziot/policy/authz"
)

// Defaults that are ours, not upstream's (upstream has no body limit).
const (
	DefaultMaxRequests = 10
	DefaultBodyLimit   = 1 << 20
	bodyReadTimeout    = 5 * time.Second
	headerReadTimeout  = 10 * time.Second
	idleTimeout        = 120 * time.Second
)

// Service is one HTTP API on one socket.
type Service struct {
	// Name is the short service name used in the policy input: keyd, certd, identityd, tpmd.
	Name string
	// Versions are the api-version strings the service knows, oldest first.
	Versions []string
	// Routes are tried in order.
	Routes []Route
	// Decider authorizes requests; Principal resolves a UID to the principal record that
	// the policy input carries (nil when the caller has none).
	Decider   authz.Decider
	Principal func(uid uint32) map[string]any
	// DecisionHook, if set, is told about every decision (the decision log).
	DecisionHook func(in *authz.Input, d authz.Decision)
	Log          *slog.Logger
	// BodyLimit caps request bodies (413 beyond it); 0 means DefaultBodyLimit.
	BodyLimit int64
	// Denied builds the service's upstream refusal (401) for a denied target.
	Denied func(r *Request, t Target) *Error

	throttle *throttle
	once     sync.Once
	// undeclared names handlers that lack a declared decision: they answer 500.
	undeclared map[*Handler]string
	denyLog    *logLimiter
	dropLog    *logLimiter
}

func (s *Service) init() {
	s.once.Do(func() {
		if s.Log == nil {
			s.Log = slog.Default()
		}
		if s.BodyLimit == 0 {
			s.BodyLimit = DefaultBodyLimit
		}
		if s.throttle == nil {
			s.throttle = newThrottle(DefaultMaxRequests)
		}
		s.denyLog = newLogLimiter(logBurst, logWindow)
		s.dropLog = newLogLimiter(logBurst, logWindow)
		s.undeclared = map[*Handler]string{}
		for i := range s.Routes {
			rt := &s.Routes[i]
			rt.segs = compilePattern(rt.Pattern)
			if rt.MinVersion != "" {
				rt.minVersion = slices.Index(s.Versions, rt.MinVersion)
			}
			for m, h := range rt.Handlers() {
				if h.Operation == "" || h.Serve == nil {
					s.undeclared[h] = m + " " + rt.Pattern
					s.Log.Error("BUG: route has no declared policy decision; it will answer 500", "service", s.Name, "route", m+" "+rt.Pattern)
				}
			}
		}
	})
}

// SetMaxRequests sets the number of concurrent connections allowed per UID.
func (s *Service) SetMaxRequests(n int) {
	s.init()
	if n <= 0 {
		n = DefaultMaxRequests
	}
	s.throttle.setMax(n)
}

type ctxKey struct{}

// conn carries the peer of a connection and returns its throttle slot once, on close.
type conn struct {
	net.Conn
	uid  uint32
	cred *unix.Ucred
	svc  *Service
	// idleSince orders the connection's idle spell among its user's (throttle ticks,
	// guarded by the throttle's lock); zero while a request is served.
	idleSince uint64

	factsOnce sync.Once
	caller    authz.Caller
	closeOnce sync.Once
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() { c.svc.throttle.release(c) })
	return c.Conn.Close()
}

// facts reads the caller's facts once per connection, on its first request, so the
// accept loop only reads SO_PEERCRED.
func (c *conn) facts() authz.Caller {
	c.factsOnce.Do(func() {
		uc, _ := c.Conn.(*net.UnixConn)
		c.caller = callerFacts(uc, c.cred)
	})
	return c.caller
}

// listener reads the peer credentials at accept and drops connections over the limit.
type listener struct {
	net.Listener
	svc *Service
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			continue
		}
		cred, err := peerCredentials(uc)
		if err != nil {
			l.svc.Log.Warn("cannot read peer credentials; closing connection", "err", err)
			c.Close()
			continue
		}
		cc := &conn{Conn: c, uid: cred.Uid, cred: cred, svc: l.svc}
		evicted, ok := l.svc.throttle.acquire(cc)
		if !ok {
			if n, ok := l.svc.dropLog.allow(); ok {
				l.svc.Log.Info(fmt.Sprintf("Max simultaneous connections reached for user %d", cred.Uid), "suppressed", n)
			}
			c.Close()
			continue
		}
		if evicted != nil {
			evicted.Conn.Close()
		}
		return cc, nil
	}
}

// Serve answers requests on l until ctx ends; then it stops accepting and waits briefly
// for requests in flight.
func (s *Service) Serve(ctx context.Context, l net.Listener) error {
	s.init()
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: headerReadTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cc, ok := c.(*conn); ok {
				return context.WithValue(ctx, ctxKey{}, cc)
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			cc, ok := c.(*conn)
			if !ok {
				return
			}
			switch st {
			case http.StateIdle:
				s.throttle.setIdle(cc, true)
			case http.StateActive:
				if !s.throttle.setIdle(cc, false) {
					// Evicted while idle: the close is under way.
					cc.Conn.Close()
				}
			}
		},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(&listener{Listener: l, svc: s}) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		return nil
	}
}

// Listen returns the socket for the service: the systemd activation socket named after it
// if there is one (activated is then true), else path bound by the service itself.
func Listen(act *activationFDs, path string, names ...string) (l net.Listener, activated bool, err error) {
	if l, ok, err := act.listener(names...); ok || err != nil {
		return l, ok, err
	}
	l, err = bindUnix(path)
	return l, false, err
}

// Request is what a handler gets.
type Request struct {
	Context    context.Context
	Method     string
	APIVersion string
	Params     map[string]string
	Query      [][2]string
	// Body is the decoded JSON body (the value NewBody returned) or nil when absent.
	Body   any
	Caller authz.Caller
	// Resolved is what the handler's Resolve left for Serve (a validated handle, ...), so
	// that Serve does not redo the work.
	Resolved any
	// Allowed is the index of the target that let an AnyOf request through.
	Allowed int

	svc     *Service
	conn    *conn
	decided int
	one     [1]Target
	bodyBuf *[]byte
}

// One returns t as the only target of a Resolve, without allocating a slice for it.
func (r *Request) One(t Target) []Target {
	r.one[0] = t
	return r.one[:]
}

// decide asks the policy about one target; reasons go to the log only.
func (s *Service) decide(r *Request, h *Handler, t Target) bool {
	op := t.Operation
	if op == "" {
		op = h.Operation
	}
	in := &authz.Input{
		Service: s.Name, Operation: op, APIVersion: r.APIVersion,
		Caller: r.Caller, Resource: t.Resource, Request: t.Request,
	}
	if s.Principal != nil {
		in.Caller.Principal = s.Principal(r.Caller.UID)
	}
	d, err := s.Decider.Decide(r.Context, in)
	if err != nil {
		// Fail closed: a broken policy denies.
		s.Log.Error("policy evaluation failed; denying", "operation", op, "err", err)
		d = authz.Decision{}
	}
	r.decided++
	if s.DecisionHook != nil {
		s.DecisionHook(in, d)
	}
	if d.Allowed() {
		return true
	}
	if n, ok := s.denyLog.allow(); ok {
		s.Log.Info("request denied by policy", "operation", op, "uid", r.Caller.UID, "reasons", d.Deny, "suppressed", n)
	}
	return false
}

// refusal is the route's upstream answer to a denied target.
func (s *Service) refusal(r *Request, h *Handler, t Target) error {
	switch {
	case h.Denied != nil:
		return h.Denied(r, t)
	case s.Denied != nil:
		return s.Denied(r, t)
	}
	return Unauthorized("not authorized")
}

// authorize makes the decisions a handler declared: every target must be allowed, or
// with AnyOf one of them; a denial answers the route's upstream refusal.
func (s *Service) authorize(r *Request, h *Handler) error {
	if r.conn != nil {
		if fr, ok := s.Decider.(authz.FactsReader); !ok || fr.ReadsCallerFacts() {
			r.Caller = r.conn.facts()
		}
	}
	targets := []Target{{}}
	if h.Resolve != nil {
		var err error
		if targets, err = h.Resolve(r); err != nil {
			return err
		}
		if len(targets) == 0 {
			return Internal(errors.New("BUG: Resolve named no target; refusing rather than serving undecided"))
		}
	}
	var denied Target
	for i, t := range targets {
		if s.decide(r, h, t) {
			if h.AnyOf {
				r.Allowed = i
				return nil
			}
			continue
		}
		if !h.AnyOf {
			return s.refusal(r, h, t)
		}
		denied = t
	}
	if h.AnyOf {
		return s.refusal(r, h, denied)
	}
	return nil
}

// Query returns the last value of a query parameter.
func (r *Request) QueryValue(name string) (string, bool) {
	v, ok := "", false
	for _, kv := range r.Query {
		if kv[0] == name {
			v, ok = kv[1], true
		}
	}
	return v, ok
}

// ServeHTTP implements upstream's processing order (api-keys.md §1.3, §1.4).
func (s *Service) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	s.init()
	req := &Request{Context: hr.Context(), Method: hr.Method, svc: s}
	if cc, ok := hr.Context().Value(ctxKey{}).(*conn); ok {
		req.conn = cc
		req.Caller = authz.Caller{UID: cc.cred.Uid, GID: cc.cred.Gid, PID: max(cc.cred.Pid, 0)}
	}
	// One read deadline for the whole request (api-keys.md §1.4's 5 s), so a declared
	// body that never comes cannot hold the connection and its throttle slot.
	if !bodyConsumed(hr) {
		setReadDeadline(w, time.Now().Add(bodyReadTimeout))
	}
	defer req.releaseBody()
	reply, err := s.handle(w, hr, req)
	if !bodyConsumed(hr) {
		// A body we did not read (a GET, or a refusal before the body) would make
		// net/http drain it before the next request: close the connection instead.
		w.Header().Set("Connection", "close")
	}
	if err != nil {
		e := AsError(err)
		if e.Status >= 500 {
			s.Log.Error("request failed", "method", hr.Method, "path", pathOf(hr), "err", e.Cause)
		} else {
			s.Log.Debug("request refused", "method", hr.Method, "path", pathOf(hr), "status", e.Status, "message", e.Message)
		}
		writeJSON(w, e.Status, map[string]string{"message": e.Message})
		return
	}
	if reply.Body == nil {
		w.WriteHeader(statusOr(reply.Status, http.StatusNoContent))
		return
	}
	writeJSON(w, statusOr(reply.Status, http.StatusOK), reply.Body)
}

// setReadDeadline is http.ResponseController's SetReadDeadline without allocating the
// controller.
func setReadDeadline(w http.ResponseWriter, t time.Time) {
	if d, ok := w.(interface{ SetReadDeadline(time.Time) error }); ok {
		d.SetReadDeadline(t)
		return
	}
	http.NewResponseController(w).SetReadDeadline(t)
}

// smallBody is the largest declared body read into a pooled buffer at once.
const smallBody = 64 << 10

// bodyBufs recycles the buffers of small bodies: a body is decoded into values that
// copy what they keep, so its bytes are free once the request is answered.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (r *Request) releaseBody() {
	if r.bodyBuf != nil {
		bodyBufs.Put(r.bodyBuf)
		r.bodyBuf = nil
	}
}

// readBody reads the whole body, at most limit bytes. A small declared length is read
// into a buffer of that size at once (io.ReadAll grows one step by step), from a pool
// the request returns it to; a large one is not trusted with memory before its bytes
// arrive.
func readBody(w http.ResponseWriter, hr *http.Request, req *Request, limit int64) ([]byte, error) {
	r := http.MaxBytesReader(w, hr.Body, limit)
	if n := hr.ContentLength; n > 0 && n <= limit && n <= smallBody {
		bp := bodyBufs.Get().(*[]byte)
		req.bodyBuf = bp
		buf := slices.Grow((*bp)[:0], int(n)+1)[:n+1] // +1 to see EOF within one read when the length is honest
		*bp = buf[:0]
		got, err := io.ReadFull(r, buf)
		if err == io.ErrUnexpectedEOF && int64(got) == n {
			return buf[:got], nil
		}
		if err == nil {
			// More than declared cannot come (net/http stops at the length).
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return io.ReadAll(r)
}

// bodyConsumed reports whether the request declared no body or its body was read whole.
func bodyConsumed(hr *http.Request) bool {
	return hr.ContentLength == 0 || hr.Body == http.NoBody
}

func pathOf(hr *http.Request) string {
	p, _, _ := strings.Cut(hr.RequestURI, "?")
	return p
}

func statusOr(s, def int) int {
	if s == 0 {
		return def
	}
	return s
}

func (s *Service) handle(w http.ResponseWriter, hr *http.Request, req *Request) (Reply, error) {
	rawPath, rawQuery, _ := strings.Cut(hr.RequestURI, "?")
	req.Query = parseQuery(rawQuery)
	version, ok := req.QueryValue("api-version")
	if !ok {
		return Reply{}, BadRequest("api-version not specified")
	}
	vi := slices.Index(s.Versions, version)
	if vi < 0 {
		return Reply{}, BadRequest("invalid api-version " + rustDebug(version))
	}
	req.APIVersion = version

	var route *Route
	for i := range s.Routes {
		rt := &s.Routes[i]
		if vi < rt.minVersion {
			continue
		}
		if params, ok := rt.match(rawPath); ok {
			route, req.Params = rt, params
			break
		}
	}
	if route == nil {
		return Reply{}, &Error{Status: http.StatusNotFound, Message: "not found"}
	}
	h := route.handler(hr.Method)
	switch hr.Method {
	case "POST", "DELETE", "PUT":
		body, err := s.decodeRequestBody(w, hr, req, h)
		if err != nil {
			return Reply{}, err
		}
		req.Body = body
	case "GET":
	default:
		return Reply{}, BadRequest("method not allowed")
	}
	if h == nil {
		return Reply{}, BadRequest("method not allowed")
	}
	if where, ok := s.undeclared[h]; ok {
		return Reply{}, Internal(fmt.Errorf("BUG: %s has no declared policy decision", where))
	}
	if err := s.authorize(req, h); err != nil {
		return Reply{}, err
	}
	reply, err := h.Serve(req)
	if err == nil && req.decided == 0 {
		// Unreachable by construction; kept so that a future shortcut cannot serve an
		// undecided request.
		return Reply{}, Internal(fmt.Errorf("BUG: %s %s replied without a policy decision", hr.Method, rawPath))
	}
	return reply, err
}

// decodeRequestBody applies the body rules of api-keys.md §1.4 for POST, PUT and DELETE.
func (s *Service) decodeRequestBody(w http.ResponseWriter, hr *http.Request, req *Request, h *Handler) (any, *Error) {
	isJSON, present := contentTypeIsJSON(hr.Header.Values("Content-Type"))
	if hr.Method == "PUT" && present && !isJSON {
		return nil, &Error{Status: http.StatusUnsupportedMediaType, Message: "request body must be application/json"}
	}
	body, err := readBody(w, hr, req, s.BodyLimit)
	if err != nil {
		// The rest of the body is not read: close the connection after the answer, or
		// net/http would try to drain it before answering.
		w.Header().Set("Connection", "close")
		var tooBig *http.MaxBytesError
		var nerr net.Error
		switch {
		case errors.As(err, &tooBig):
			return nil, &Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("request body exceeds the limit of %d bytes", s.BodyLimit)}
		case errors.As(err, &nerr) && nerr.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
			return nil, &Error{Status: http.StatusRequestTimeout, Message: "timed out reading request body"}
		default:
			return nil, BadRequest(fmt.Sprintf("could not read request body: %v", err))
		}
	}
	// Read whole. net/http lifts the read deadline itself when it starts watching for the
	// client going away (its background read), so a long request is not cut at 5 s.
	hr.Body = http.NoBody
	if hr.Method != "PUT" {
		if len(body) == 0 || (present && !isJSON) {
			return nil, nil
		}
	}
	var target any
	if h != nil && h.NewBody != nil {
		target = h.NewBody()
	} else {
		target = new(json.RawMessage)
	}
	if err := decodeBody(body, target); err != nil {
		return nil, err
	}
	if h == nil || h.NewBody == nil {
		return nil, nil
	}
	return target, nil
}

// contentTypeIsJSON reports whether a Content-Type header is present (a value that is not
// visible ASCII counts as absent, as upstream) and whether its media type is exactly
// application/json (case-sensitive, as upstream).
func contentTypeIsJSON(values []string) (isJSON, present bool) {
	if len(values) == 0 {
		return false, false
	}
	v := values[0]
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 && v[i] != '\t' || v[i] >= 0x7f {
			return false, false
		}
	}
	mt, _, _ := strings.Cut(v, ";")
	return strings.TrimSpace(mt) == "application/json", true
}

var (
	jsonContentType = []string{"application/json"}
	bufPool         = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// JSONAppender is a reply body that writes its own compact JSON, as encoding/json would
// (keyd's sign answer, sent for every signature, skips the reflection).
type JSONAppender interface {
	AppendJSON(b []byte) []byte
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := bufPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 {
			buf.Reset()
			bufPool.Put(buf)
		}
	}()
	var b []byte
	if a, ok := v.(JSONAppender); ok {
		b = a.AppendJSON(buf.AvailableBuffer())
	} else {
		enc := json.NewEncoder(buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			status = http.StatusInternalServerError
			buf.Reset()
			buf.WriteString(`{"message":"internal error"}`)
		}
		b = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	h := w.Header()
	// Assigned, not Set: the shared slice is never written to, and Set would allocate.
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	w.Write(b)
}
