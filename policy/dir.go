package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/iotbroker/aziot/policy/authz"
)

// MaxPolicyFileBytes bounds one file of a policy directory.
const MaxPolicyFileBytes = 4 << 20

// DirFile is one file of a policy directory as loaded.
type DirFile struct {
	Path string
	Kind string // "rego", "test", "data"
}

// LoadDir reads a policy directory (policy.d) as a layer:
//
//   - *.rego files are modules; *_test.rego files are their Rego tests, run before the
//     layer is activated and never evaluated for a decision;
//   - *.json files are data, placed (as OPA's loader does) at the path of their directory
//     relative to dir: dir/data.json at the root of `data`, dir/groups/x.json under
//     data.groups; two files defining the same leaf are refused;
//   - names starting with "." and ending in "~" are ignored (editor files), as is every
//     other extension; subdirectories are read recursively.
//
// A missing or empty directory gives (nil, nil): no custom layer. Errors name the file.
func LoadDir(dir string) (*Layer, error) {
	files, err := dirFiles(dir)
	if err != nil || len(files) == 0 {
		return nil, err
	}
	l := &Layer{Modules: map[string]string{}, Tests: map[string]string{}, Data: map[string]any{}}
	var list []any
	for _, f := range files {
		b, err := readLimited(f.Path)
		if err != nil {
			return nil, err
		}
		switch f.Kind {
		case "rego", "test":
			if _, err := parseModule(f.Path, string(b)); err != nil {
				return nil, err
			}
			if f.Kind == "test" {
				l.Tests[f.Path] = string(b)
			} else {
				l.Modules[f.Path] = string(b)
			}
		case "data":
			var v any
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.UseNumber()
			if err := dec.Decode(&v); err != nil {
				return nil, fmt.Errorf("%s: %w", f.Path, err)
			}
			if dec.More() {
				return nil, fmt.Errorf("%s: trailing data after the JSON document", f.Path)
			}
			v = authz.NormalizeNumbers(v)
			rel, _ := filepath.Rel(dir, filepath.Dir(f.Path))
			var prefix []string
			if rel != "." {
				prefix = strings.Split(filepath.ToSlash(rel), "/")
			}
			if len(prefix) == 0 {
				m, ok := v.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("%s: data at the root of the policy directory must be a JSON object", f.Path)
				}
				v = m
			}
			for i := len(prefix) - 1; i >= 0; i-- {
				v = map[string]any{prefix[i]: v}
			}
			if err := mergeInto(l.Data, v.(map[string]any), ""); err != nil {
				return nil, fmt.Errorf("%s: %w", f.Path, err)
			}
		}
		list = append(list, map[string]any{"path": f.Path, "kind": f.Kind})
	}
	l.Meta = map[string]any{"dir": dir, "files": list}
	return l, nil
}

func parseModule(name, src string) (*ast.Module, error) {
	return ast.ParseModuleWithOpts(name, src, parseOpts)
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > MaxPolicyFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxPolicyFileBytes)
	}
	b := make([]byte, st.Size())
	n, err := f.Read(b)
	if err != nil && n != len(b) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b[:n], nil
}

func dirFiles(dir string) ([]DirFile, error) {
	var files []DirFile
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		name := d.Name()
		if path != dir && (strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~")) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		kind := ""
		switch {
		case strings.HasSuffix(name, "_test.rego"):
			kind = "test"
		case strings.HasSuffix(name, ".rego"):
			kind = "rego"
		case strings.HasSuffix(name, ".json"):
			kind = "data"
		default:
			return nil
		}
		if !d.Type().IsRegular() {
			// Follow symlinks to regular files (config management links files in).
			st, err := os.Stat(path)
			if err != nil || !st.Mode().IsRegular() {
				return nil
			}
		}
		files = append(files, DirFile{Path: path, Kind: kind})
		return nil
	})
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, err
}

// DirFingerprint summarizes what LoadDir would read (names, sizes, times, inodes), so a
// watcher can tell cheaply that something changed.
func DirFingerprint(dir string) string {
	files, err := dirFiles(dir)
	if err != nil {
		return "error:" + err.Error()
	}
	h := sha256.New()
	for _, f := range files {
		st, err := os.Stat(f.Path)
		if err != nil {
			fmt.Fprintf(h, "%s\x00gone\x00", f.Path)
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00%v\x00%s\x00", f.Path, st.Size(), st.ModTime().UnixNano(), st.Mode(), inode(st))
	}
	return hex.EncodeToString(h.Sum(nil))
}
