package policy

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDecisionLogEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log", "decisions.log")
	l, err := OpenDecisionLog(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	in := baseInput()
	l.Hook(in, Decision{Allow: true, Deny: []string{"incident"}, Revision: "42", PolicyID: "abc"})
	l.Hook(in, Decision{Allow: true, PolicyID: "abc", Cached: true})
	l.Hook(in, Decision{}) // evaluation failed
	l.Close()
	f, _ := os.Open(path)
	defer f.Close()
	var got []DecisionEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e DecisionEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		got = append(got, e)
	}
	if len(got) != 3 || got[0].Result != "deny" || got[0].Revision != "42" || got[0].Deny[0] != "incident" ||
		got[1].Result != "allow" || !got[1].Cached || got[2].Result != "error" {
		t.Fatalf("%+v", got)
	}
	if got[0].Caller.Exe != "/bin/ok" || got[0].Resource["key_id"] != "k" || got[0].Operation != "keyd.sign" {
		t.Fatalf("%+v", got[0])
	}
	if _, err := time.Parse(time.RFC3339Nano, got[0].Time); err != nil {
		t.Fatal(err)
	}
	if l, err := OpenDecisionLog("", 0, 0); l != nil || err != nil {
		t.Fatal("empty destination opens a log")
	}
}

func TestDecisionLogRotates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.log")
	l, err := OpenDecisionLog(path, 2000, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		l.Hook(baseInput(), Decision{Allow: true, PolicyID: "p"})
	}
	l.Close()
	entries, _ := os.ReadDir(dir)
	var names []string
	total := int64(0)
	for _, e := range entries {
		names = append(names, e.Name())
		st, _ := os.Stat(filepath.Join(dir, e.Name()))
		total += st.Size()
		if st.Size() > 2000 {
			t.Errorf("%s is %d bytes", e.Name(), st.Size())
		}
	}
	if strings.Join(names, ",") != "d.log,d.log.1,d.log.2" {
		t.Fatalf("files %v", names)
	}
	if total > 3*2000 {
		t.Fatalf("%d bytes kept", total)
	}
	// Every kept line is whole JSON.
	for _, n := range names {
		b, _ := os.ReadFile(filepath.Join(dir, n))
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if !json.Valid([]byte(line)) {
				t.Fatalf("%s: torn line %q", n, line)
			}
		}
	}
}

// A write that fails (here: a full device) is counted and reported in the service log,
// once per minute at most, never dropped silently.
func TestDecisionLogReportsWriteErrors(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Fatalf("this test needs /dev/full: %v", err)
	}
	l, err := OpenDecisionLog("/dev/full", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	logs := &syncBuf{}
	l.Logger = slog.New(slog.NewTextHandler(logs, nil))
	for i := 0; i < 5; i++ {
		l.Hook(baseInput(), Decision{Allow: true, PolicyID: "p"})
	}
	if n := l.Failures(); n != 5 {
		t.Fatalf("%d failures counted, want 5", n)
	}
	out := logs.String()
	if strings.Count(out, "decision log write failed") != 1 || !strings.Contains(out, "no space left") || !strings.Contains(out, "dest=/dev/full") {
		t.Fatalf("service log:\n%s", out)
	}
	// After the interval, the next failure is reported with the count since the last.
	l.mu.Lock()
	l.lastReport = l.lastReport.Add(-decisionLogReportEvery)
	l.mu.Unlock()
	l.Hook(baseInput(), Decision{Allow: true, PolicyID: "p"})
	if out := logs.String(); strings.Count(out, "decision log write failed") != 2 || !strings.Contains(out, "failed_writes=5") {
		t.Fatalf("service log:\n%s", out)
	}
}
