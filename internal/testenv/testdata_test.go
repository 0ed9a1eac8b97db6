package testenv

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpstreamCopiesUnchanged checks the verbatim upstream files in testdata/ against the
// digests in testdata/SHA256SUMS: an accidental edit (or an editor's newline fix) would
// silently change what the tests validate against, so it must fail here instead.
func TestUpstreamCopiesUnchanged(t *testing.T) {
	root := filepath.Join(RepoRoot(), "testdata")
	f, err := os.Open(filepath.Join(root, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sha256sum's text format: digest, two spaces (or space and '*'), path.
		sum, name, ok := strings.Cut(sc.Text(), " ")
		name = strings.TrimLeft(name, " *")
		if !ok || len(sum) != 64 || name == "" {
			t.Fatalf("SHA256SUMS: malformed line %q", sc.Text())
		}
		listed[name] = true
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := sha256.Sum256(data); hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s differs from the upstream copy recorded in SHA256SUMS; restore it (it is never edited)", name)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	// A file added next to the copies without a digest would escape the check.
	for _, dir := range []string{"openapi", "vectors"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if !listed[filepath.ToSlash(rel)] {
				t.Errorf("%s is not listed in testdata/SHA256SUMS", filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(listed) == 0 {
		t.Fatal("SHA256SUMS lists no files")
	}
}
