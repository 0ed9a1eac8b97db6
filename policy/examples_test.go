package policy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every worked example of docs/policy.md is a policy directory under examples/ whose own
// Rego tests pass, and whose files appear verbatim in the docs.
func TestWorkedExamples(t *testing.T) {
	dirs, err := filepath.Glob("examples/*")
	if err != nil || len(dirs) < 6 {
		t.Fatalf("examples: %v %v", dirs, err)
	}
	docs, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			l, err := LoadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Tests) == 0 {
				t.Fatal("example without tests")
			}
			e, err := NewEngine(nil, principals())
			if err != nil {
				t.Fatal(err)
			}
			if err := e.SetLayer("policy.d", l); err != nil {
				t.Fatal(err)
			}
			results, err := RunTests(context.Background(), map[string]*Layer{"policy.d": l}, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range results {
				if !r.Pass {
					t.Errorf("%s\n%s", r, r.Output)
				}
			}
			files, _ := dirFiles(dir)
			for _, f := range files {
				b, _ := os.ReadFile(f.Path)
				if !strings.Contains(string(docs), strings.TrimSpace(string(b))) {
					t.Errorf("%s is not in docs/policy.md verbatim", f.Path)
				}
			}
		})
	}
}

// The catalogue table of docs/policy.md §3 is the catalogue.
func TestDocsOperationTable(t *testing.T) {
	docs, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(docs), OperationsMarkdown()) {
		t.Fatalf("docs/policy.md §3 differs from policy.OperationsMarkdown():\n%s", OperationsMarkdown())
	}
}

// Every example together in one directory: no clashing rules, packages or data.
func TestWorkedExamplesTogether(t *testing.T) {
	dir := t.TempDir()
	srcs, _ := filepath.Glob("examples/*/*")
	for _, src := range srcs {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(src)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(nil, principals())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetLayer("policy.d", l); err != nil {
		t.Fatal(err)
	}
}
