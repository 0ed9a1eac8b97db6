package policy

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://fleet.blob.core.windows.net/b/fleet.tar.gz?sv=2024&sig=abc%2Fdef": "https://fleet.blob.core.windows.net/b/fleet.tar.gz?REDACTED",
		"https://user:pass@host/path": "https://REDACTED@host/path",
		"https://host/path":           "https://host/path",
		"https://host/path#frag":      "https://host/path#REDACTED",
		"http://a b/%zz?sig=x":        "(unparseable URL, REDACTED)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// The bundle URL's query (a SAS token) and userinfo never reach status.json, the log or
// the errors PollOnce returns, whether the poll fails (HTTP error, a redirect to a dead
// server, a refused connection) or succeeds; status.json is not world-readable.
func TestPollRedactsURLSecrets(t *testing.T) {
	ops := newTestKey(t)
	good := buildBundle(t, bundleSpec{revision: "7", modules: map[string]string{"deny.rego": bundleDeny}, key: &ops, kid: "ops"})
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	var mode atomic.Int32 // 0: 500, 1: redirect to a dead server, 2: the bundle
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case 0:
			http.Error(w, "unavailable", http.StatusInternalServerError)
		case 1:
			http.Redirect(w, r, deadURL+"/moved?token=REDIRECT-SECRET-42", http.StatusFound)
		default:
			w.Header().Set("ETag", `"7"`)
			w.Write(good)
		}
	}))
	defer srv.Close()
	const secrets = "SECRET-SIG-0123|passw0rd-xyz|REDIRECT-SECRET-42"
	url := strings.Replace(srv.URL, "http://", "http://fleet:passw0rd-xyz@", 1) + "/bundles/fleet.tar.gz?sv=2024-01-01&sig=SECRET-SIG-0123"
	e, _ := NewEngine(nil, principals())
	state := t.TempDir()
	logs := &syncBuf{}
	m := NewManager(e, ManagerOptions{Service: "keyd", StateDir: state, Keys: trusted(ops),
		Poll: &PollOptions{URL: url, MinDelay: 20 * time.Millisecond, MaxDelay: 40 * time.Millisecond},
		Log:  slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); m.Wait() })
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var errs []string
	check := func(what, s string) {
		t.Helper()
		for _, secret := range strings.Split(secrets, "|") {
			if strings.Contains(s, secret) {
				t.Errorf("%s holds %s:\n%s", what, secret, s)
			}
		}
	}
	statusFile := filepath.Join(state, "status.json")
	for _, c := range []struct {
		mode   int32
		result string
	}{{0, "HTTP 500"}, {1, "error: "}, {2, "activated"}} {
		mode.Store(c.mode)
		eventually(t, 2*time.Second, func() bool {
			st := m.Status()
			return st.Poll != nil && strings.HasPrefix(st.Poll.Result, c.result) && strings.Contains(logs.String(), "url=")
		}, "poll result "+c.result)
		if err := m.PollOnce(ctx); err != nil {
			errs = append(errs, err.Error())
		}
		b, err := os.ReadFile(statusFile)
		if err != nil {
			t.Fatal(err)
		}
		check("status.json", string(b))
		if !strings.Contains(string(b), "REDACTED") {
			t.Errorf("status.json shows no redacted URL:\n%s", b)
		}
	}
	if e.Revision() != "7" {
		t.Fatalf("bundle not activated: %q", e.Revision())
	}
	// A refused connection: net/http's error names the URL.
	srv.Close()
	if err := m.PollOnce(ctx); err == nil {
		t.Fatal("poll of a closed server succeeded")
	} else {
		errs = append(errs, err.Error())
	}
	if len(errs) < 3 {
		t.Fatalf("only %d errors seen: %q", len(errs), errs)
	}
	for _, e := range errs {
		check("error", e)
		if !strings.Contains(e, "127.0.0.1") {
			t.Errorf("error lost its context: %s", e)
		}
	}
	check("log", logs.String())
	for _, want := range []string{"bundle poll failed", "policy bundle activated", "?REDACTED"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	st, err := os.Stat(statusFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o007 != 0 {
		t.Errorf("status.json is %v: readable by every uid", st.Mode().Perm())
	}
	t.Logf("errors: %q", errs)
}
