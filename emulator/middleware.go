package emulator

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"
)

// reqCtx carries what the middleware learned about a request to the endpoint handler.
type reqCtx struct {
	body   []byte
	entry  *LogEntry
	faults map[string]*Fault
	route  string
	id     string
}

func (rc *reqCtx) fault(kind string) *Fault {
	if rc == nil {
		return nil
	}
	return rc.faults[kind]
}

// setAuth records the parsed Authorization and the verdict in the log entry.
func (rc *reqCtx) setVerdict(v string) {
	if rc.entry.Auth == nil {
		rc.entry.Auth = &AuthInfo{}
	}
	rc.entry.Auth.Verdict = v
}

type classifyFunc func(r *http.Request) (route, id string)

type endpointHandler func(w http.ResponseWriter, r *http.Request, rc *reqCtx)

// errorShape writes the endpoint's error body for generic faults (throttle, server_error).
type errorShape func(w http.ResponseWriter, status int, kind string)

const maxBody = 1 << 20

// serve wraps an endpoint handler with logging and the per-request fault knobs. The
// handler writes into a buffer so that reset-after-headers and mid-body delays can be
// applied to any answer.
func (e *Emulator) serve(kind string, name func() string, classify classifyFunc, shape errorShape, h endpointHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, id := classify(r)
		entry := &LogEntry{
			Time: e.clk.Now(), Listener: kind, Method: r.Method, Path: r.URL.Path,
			Query: r.URL.RawQuery, Route: route, ID: id, Headers: map[string]string{},
			ClientCert: certInfo(r.TLS),
		}
		if kind == "hub" {
			entry.Listener = "hub:" + name()
		}
		for _, hname := range loggedHeaders {
			if v := r.Header.Get(hname); v != "" {
				entry.Headers[hname] = v
			}
		}
		entry.Auth = parseAuthForLog(r.Header.Get("Authorization"))
		rc := &reqCtx{entry: entry, route: route, id: id}
		rc.faults = e.faults.pick(target{endpoint: kind, name: name(), route: route, id: id})
		for k := range rc.faults {
			entry.Faults = append(entry.Faults, k)
		}
		defer func() { e.log.add(*entry) }()

		if f := rc.faults[FaultReset]; f != nil && (f.ResetPoint == ResetBeforeRead || f.ResetPoint == "") {
			hijackClose(w)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			entry.Status = 0
			return
		}
		entry.Body = e.log.capped(body)
		if len(body) > maxBody {
			shape(w, http.StatusRequestEntityTooLarge, "")
			entry.Status = http.StatusRequestEntityTooLarge
			return
		}
		rc.body = body
		if f := rc.faults[FaultReset]; f != nil && f.ResetPoint == ResetAfterRead {
			hijackClose(w)
			return
		}
		if f := rc.faults[FaultDelay]; f != nil && !f.MidBody {
			if !sleepCtx(r.Context(), f.Delay) {
				return
			}
		}

		buf := httptest.NewRecorder()
		switch {
		case rc.faults[FaultThrottle] != nil:
			ra := rc.faults[FaultThrottle].RetryAfter
			if ra == 0 {
				ra = 1
			}
			buf.Header().Set("Retry-After", strconv.Itoa(ra))
			shape(buf, http.StatusTooManyRequests, FaultThrottle)
		case rc.faults[FaultServerError] != nil:
			st := rc.faults[FaultServerError].Status
			if st == 0 {
				st = http.StatusInternalServerError
			}
			shape(buf, st, FaultServerError)
		default:
			h(buf, r, rc)
		}
		res := buf.Result()
		resBody := buf.Body.Bytes()
		entry.Status = res.StatusCode
		entry.ResponseBody = e.log.capped(resBody)
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		if len(resBody) > 0 {
			w.Header().Set("Content-Length", strconv.Itoa(len(resBody)))
		}
		if f := rc.faults[FaultReset]; f != nil && f.ResetPoint == ResetAfterHeaders {
			// Promise a body, send the headers and half of it, then drop the connection.
			w.WriteHeader(res.StatusCode)
			_, _ = w.Write(resBody[:len(resBody)/2])
			if fl, ok := w.(http.Flusher); ok {
				fl.Flush()
			}
			hijackClose(w)
			return
		}
		w.WriteHeader(res.StatusCode)
		if f := rc.faults[FaultDelay]; f != nil && f.MidBody {
			_, _ = w.Write(resBody[:len(resBody)/2])
			if fl, ok := w.(http.Flusher); ok {
				fl.Flush()
			}
			if !sleepCtx(r.Context(), f.Delay) {
				return
			}
			_, _ = w.Write(resBody[len(resBody)/2:])
			return
		}
		_, _ = w.Write(resBody)
	})
}

func hijackClose(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	conn, _, err := rc.Hijack()
	if err != nil {
		panicFree(w)
		return
	}
	_ = conn.Close()
}

// panicFree aborts the response when the connection cannot be hijacked; ErrAbortHandler is
// the documented way to make net/http drop the connection without logging a stack.
func panicFree(http.ResponseWriter) { panic(http.ErrAbortHandler) }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func parseAuthForLog(h string) *AuthInfo {
	switch {
	case h == "":
		return nil
	case strings.HasPrefix(h, sasPrefix):
		a := &AuthInfo{Scheme: "SharedAccessSignature"}
		for _, p := range strings.Split(h[len(sasPrefix):], "&") {
			k, v, _ := strings.Cut(p, "=")
			switch k {
			case "sr":
				a.SR = v
			case "se":
				a.SE = v
			case "skn":
				a.SKN = v
			}
		}
		return a
	case strings.HasPrefix(h, "Basic "):
		a := &AuthInfo{Scheme: "Basic"}
		if raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(h, "Basic ")); err == nil {
			u, _, _ := bytes.Cut(raw, []byte(":")) // the password is never logged
			a.User = string(u)
		}
		return a
	}
	s, _, _ := strings.Cut(h, " ")
	return &AuthInfo{Scheme: s}
}

// apiVersion returns the api-version query value.
func apiVersion(r *http.Request) string { return r.URL.Query().Get("api-version") }

// splitPath splits the escaped path into percent-decoded segments (each decoded once).
func splitPath(r *http.Request) []string {
	raw := strings.Trim(r.URL.EscapedPath(), "/")
	if raw == "" {
		return nil
	}
	parts := strings.Split(raw, "/")
	for i, p := range parts {
		if d, err := pathUnescape(p); err == nil {
			parts[i] = d
		}
	}
	return parts
}
