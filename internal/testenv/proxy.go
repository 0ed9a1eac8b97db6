package testenv

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// ValidatingProxy listens on a new socket, forwards to target, and validates every
// answer the spec for the request's api-version describes. It records what it checked.
type ValidatingProxy struct {
	Socket string

	mu       sync.Mutex
	checked  map[string]int
	failures []string
}

// NewValidatingProxy starts a proxy in front of target; specs maps api-version → spec.
func NewValidatingProxy(t testing.TB, target string, specs map[string]*Spec) *ValidatingProxy {
	t.Helper()
	p := &ValidatingProxy{Socket: filepath.Join(t.TempDir(), "proxy.sock"), checked: map[string]int{}}
	l, err := net.Listen("unix", p.Socket)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = "backend"
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", target)
		}},
		ModifyResponse: func(resp *http.Response) error {
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			resp.Body = io.NopCloser(bytes.NewReader(body))
			spec := specs[resp.Request.URL.Query().Get("api-version")]
			path := resp.Request.URL.Path
			if spec != nil && spec.Describes(resp.Request.Method, path, resp.StatusCode) {
				err := spec.ValidateResponse(resp.Request.Method, path, resp.StatusCode, body)
				p.mu.Lock()
				p.checked[resp.Request.Method+" "+routeOf(path)]++
				if err != nil {
					p.failures = append(p.failures, err.Error())
				}
				p.mu.Unlock()
			}
			return nil
		},
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, f := range p.failures {
			t.Errorf("OpenAPI: %s", f)
		}
	})
	return p
}

func routeOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) > 1 && parts[0] != "derivedkey" {
		parts[len(parts)-1] = "{id}"
	}
	return "/" + strings.Join(parts, "/")
}

// Checked returns how many answers were validated per "METHOD /route".
func (p *ValidatingProxy) Checked() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.checked {
		out[k] = v
	}
	return out
}
