// Command pathcheck fails when tracked code uses a filesystem path outside the repository:
// ../shared, a ../ chain that climbs above the repository root, or an absolute /work path.
// Such paths work on one machine (or in CI, which has ../shared beside the clone) and break
// a plain clone. Run by `make lint` from the repository root: go run ./scripts/pathcheck
//
// Only path strings in code count, never comments: comments may name the shared spec
// documents as contract references. Go files are tokenized, so only string literals are
// checked (runs of literals passed side by side, as in filepath.Join(root, "..", "shared"),
// are joined first). Shell scripts, Makefiles and JavaScript are checked line by line with
// their comments stripped. A line that must keep such a string (e.g. a reference inside an
// upstream file that is not a path here) carries the marker "pathcheck:ok" and a reason in
// a comment (in Go also on the line above).
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"go/scanner"
	"go/token"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strconv"
	"strings"
)

const marker = "pathcheck:ok"

// finding is one offending path string.
type finding struct {
	file string
	line int
	text string
	why  string
}

func (f finding) String() string { return fmt.Sprintf("%s:%d: %s: %q", f.file, f.line, f.why, f.text) }

func main() {
	out, err := exec.Command("git", "ls-files", "-z").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pathcheck: git ls-files:", err)
		os.Exit(2)
	}
	var found []finding
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		kind := kindOf(name)
		if kind == "" {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			if os.IsNotExist(err) { // deleted in the work tree, not yet in the index
				continue
			}
			fmt.Fprintln(os.Stderr, "pathcheck:", err)
			os.Exit(2)
		}
		if kind == "sh" && !bytes.HasPrefix(src, []byte("#!")) && path.Ext(name) != ".sh" {
			continue
		}
		found = append(found, check(name, kind, src)...)
	}
	if len(found) > 0 {
		fmt.Fprintln(os.Stderr, "paths outside the repository (a plain clone has none of them; copy what is needed into the repo, e.g. testdata/):")
		for _, f := range found {
			fmt.Fprintln(os.Stderr, "  "+f.String())
		}
		os.Exit(1)
	}
}

// kindOf says how a tracked file is checked, or "" to skip it. The upstream copies in
// testdata/ are data kept verbatim, prose (Markdown) may name paths freely, and this
// checker's own source spells the forbidden paths as its patterns and test cases.
func kindOf(name string) string {
	if strings.HasPrefix(name, "testdata/") || strings.HasPrefix(name, "scripts/pathcheck/") ||
		strings.Contains(name, "node_modules/") {
		return ""
	}
	base := path.Base(name)
	switch {
	case strings.HasSuffix(name, ".go"):
		return "go"
	case base == "Makefile" || strings.HasSuffix(name, ".mk"):
		return "make"
	case strings.HasSuffix(name, ".js"), strings.HasSuffix(name, ".mjs"), strings.HasSuffix(name, ".cjs"), strings.HasSuffix(name, ".ts"):
		return "js"
	case strings.HasSuffix(name, ".sh"), path.Ext(base) == "", strings.HasPrefix(name, ".ci/"):
		return "sh" // extensionless files only when they start with a shebang (see main)
	}
	return ""
}

func check(name, kind string, src []byte) []finding {
	if kind == "go" {
		return checkGo(name, src)
	}
	return checkLines(name, kind, src)
}

// depth is how many directories the file sits below the repository root: tests and
// scripts resolve relative paths from their own directory, so that many ../ stay inside.
func depth(name string) int {
	d := path.Dir(name)
	if d == "." {
		return 0
	}
	return strings.Count(d, "/") + 1
}

var (
	upRun   = regexp.MustCompile(`(?:^|[^\w.])(\.\.(?:/\.\.)*)(?:/|$|[^\w./-])`)
	workAbs = regexp.MustCompile(`(?:^|[^\w.-])/work(?:/|$|[^\w.-])`)
)

// problem says why s (a path string, or a line of shell) leaves the repository, or "".
// base is how many levels s may climb before it passes the root.
func problem(s string, base int) string {
	switch {
	case strings.Contains(s, "../shared"):
		return "../shared is not in a plain clone"
	case workAbs.MatchString(s):
		return "absolute /work path"
	}
	for _, m := range upRun.FindAllStringSubmatch(s, -1) {
		if n := strings.Count(m[1], ".."); n > base {
			return fmt.Sprintf("%d levels of ../ climb above the repository root", n)
		}
	}
	return ""
}

// strLit is one Go string literal: its line and value.
type strLit struct {
	line int
	val  string
}

// checkGo looks at string literals only. Adjacent literals separated by commas (call
// arguments) are joined with "/" so that filepath.Join(x, "..", "shared") is seen whole;
// a run right after RepoRoot() starts at the root, so any .. there leaves the repository.
func checkGo(name string, src []byte) []finding {
	var found []finding
	fset := token.NewFileSet()
	file := fset.AddFile(name, -1, len(src))
	var s scanner.Scanner
	s.Init(file, src, nil, scanner.ScanComments)

	marked := map[int]bool{} // lines whose comment carries the marker
	var run []strLit
	runBase := depth(name)
	var prev []token.Token // last tokens, to spot RepoRoot() before a run
	var prevLit []string
	flush := func() {
		if len(run) == 0 {
			return
		}
		parts := make([]string, len(run))
		for i, l := range run {
			parts[i] = l.val
		}
		joined := strings.Join(parts, "/")
		if why := problem(joined, runBase); why != "" {
			found = append(found, finding{name, run[0].line, joined, why})
		}
		run = run[:0]
	}
	for {
		pos, tok, lit := s.Scan()
		if tok == token.EOF {
			break
		}
		line := file.Line(pos)
		switch tok {
		case token.COMMENT:
			if strings.Contains(lit, marker) {
				marked[line] = true
			}
			continue
		case token.STRING:
			v, err := strconv.Unquote(lit)
			if err != nil {
				v = lit
			}
			if len(run) == 0 {
				runBase = depth(name)
				if n := len(prev); n >= 4 && prev[n-1] == token.COMMA && prev[n-2] == token.RPAREN &&
					prev[n-3] == token.LPAREN && prev[n-4] == token.IDENT && prevLit[n-4] == "RepoRoot" {
					runBase = 0
				}
			}
			run = append(run, strLit{line, v})
		case token.COMMA:
			// a comma continues a run of literals
		default:
			flush()
		}
		prev = append(prev, tok)
		prevLit = append(prevLit, lit)
		if len(prev) > 8 {
			prev, prevLit = prev[1:], prevLit[1:]
		}
	}
	flush()
	// The marker sits in a comment on the literal's line or on the line above it.
	kept := found[:0]
	for _, f := range found {
		if !marked[f.line] && !marked[f.line-1] {
			kept = append(kept, f)
		}
	}
	return kept
}

// checkLines checks each line of a shell script, Makefile or JavaScript file with its
// comment removed.
func checkLines(name, kind string, src []byte) []finding {
	var found []finding
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	inBlock := false // inside a JavaScript /* */ comment
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.Contains(line, marker) {
			continue
		}
		code := line
		if kind == "js" {
			code, inBlock = stripJS(code, inBlock)
		} else {
			code = stripHash(code)
		}
		if why := problem(code, depth(name)); why != "" {
			found = append(found, finding{name, n, strings.TrimSpace(line), why})
		}
	}
	return found
}

// stripHash drops a shell or make comment: a # at the start or after a blank. A # inside
// a word (${#a}, $#, url#frag) does not start one.
func stripHash(line string) string {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			return line[:i]
		}
	}
	return line
}

// stripJS drops // and /* */ comments (not inside quotes, approximately: a // preceded
// by ':' is taken for a URL).
func stripJS(line string, inBlock bool) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(line); i++ {
		if inBlock {
			if strings.HasPrefix(line[i:], "*/") {
				inBlock = false
				i++
			}
			continue
		}
		if strings.HasPrefix(line[i:], "/*") {
			inBlock = true
			i++
			continue
		}
		if strings.HasPrefix(line[i:], "//") && (i == 0 || line[i-1] != ':') {
			break
		}
		b.WriteByte(line[i])
	}
	return b.String(), inBlock
}
