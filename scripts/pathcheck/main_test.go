package main

import "testing"

func TestCheck(t *testing.T) {
	cases := []struct {
		name, file, src string
		want            int // findings
	}{
		{"comment names the spec", "emulator/emulator.go", "package e\n// Contracts: shared/spec/emulator.md, ../shared/spec/x.md\n", 0},
		{"const climbing to shared", "cmd/aziotctl/config_test.go", "package main\nconst d = \"../../../shared/vectors/config-apply\"\n", 1},
		{"Join split into literals", "internal/testenv/openapi.go", "package t\nfunc f() string { return filepath.Join(RepoRoot(), \"..\", \"shared\", \"spec\") }\n", 1},
		{"Join above the root after RepoRoot", "internal/testenv/x.go", "package t\nvar d = filepath.Join(RepoRoot(), \"..\", \"other\")\n", 1},
		{"Join to the root from the package dir", "internal/testenv/x.go", "package t\nvar d = filepath.Join(dir, \"..\", \"..\")\n", 0},
		{"testdata from the package dir", "broker/superconfig/v_test.go", "package s\nconst d = \"../../testdata/vectors/config-apply\"\n", 0},
		{"three levels from two deep", "broker/superconfig/v_test.go", "package s\nconst d = `../../../x`\n", 1},
		{"absolute /work path", "cmd/x/x.go", "package x\nvar p = \"/work/main/testdata\"\n", 1},
		{"not /work", "cmd/x/x.go", "package x\nvar p = []string{\"/workspace\", \"/var/work\", \"https://h/.../.well-known/est\"}\n", 0},
		{"marked in Go", "cmd/x/x.go", "package x\n// pathcheck:ok: not a path here\nvar p = \"../../../y\"\n", 0},
		{"shell comment", ".ci/run", "#!/bin/sh\n# Runs with ../shared beside the clone.\ncd \"$(dirname \"$0\")/..\"\n", 0},
		{"shell use", "scripts/x.sh", "#!/bin/sh\ncp -r ../shared/spec x # copy\n", 1},
		{"shell climbing", "scripts/x.sh", "#!/bin/sh\ncd \"$(dirname \"$0\")/../..\"\n", 1},
		{"shell count is not a comment", "scripts/x.sh", "#!/bin/sh\necho ${#a} /work/x\n", 1},
		{"Makefile", "Makefile", "# see ../shared\nspec:\n\tcat ../x\n", 1},
		{"js comment and use", "emulator/crossclient/testdata/run.js", "// ../shared/spec\n/* /work/x */ const a = '../../../../x';\n", 1},
		{"js url", "emulator/crossclient/testdata/run.js", "const u = 'https://localhost/../a';\n", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := check(c.file, kindOf(c.file), []byte(c.src))
			if len(got) != c.want {
				t.Errorf("got %d findings, want %d: %v", len(got), c.want, got)
			}
		})
	}
}

func TestKindOf(t *testing.T) {
	for file, want := range map[string]string{
		"a/b.go": "go", "Makefile": "make", "scripts/fuzz.sh": "sh", ".ci/run": "sh",
		"x/run.js": "js", "docs/a.md": "", "testdata/README.md": "", "testdata/x/y.go": "",
		"README.md": "", "go.mod": "", "scripts/pathcheck/main.go": "",
	} {
		if got := kindOf(file); got != want {
			t.Errorf("kindOf(%q) = %q, want %q", file, got, want)
		}
	}
}
