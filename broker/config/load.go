// Package config loads a service's configuration the way upstream does (config.md §1.3):
// the main file, then every regular *.toml file of the config.d directory in path order,
// merged table by table with arrays concatenated, and decoded with unknown keys ignored.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/BurntSushi/toml"
)

// Load reads mainPath (absent → empty) and the *.toml files of dirPath (absent → none),
// merges them and decodes the result into out.
func Load(mainPath, dirPath string, out any) error {
	doc, err := Read(mainPath, dirPath)
	if err != nil {
		return err
	}
	return Decode(doc, out)
}

// Read returns the merged document without decoding it.
func Read(mainPath, dirPath string) (map[string]any, error) {
	doc := map[string]any{}
	if mainPath != "" {
		m, err := readFile(mainPath)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if m != nil {
			doc = m
		}
	}
	if dirPath == "" {
		return doc, nil
	}
	files, err := Fragments(dirPath)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		m, err := readFile(f)
		if err != nil {
			return nil, err
		}
		doc = Merge(doc, m).(map[string]any)
	}
	return doc, nil
}

// Fragments lists the files of dirPath that take part in the merge: regular files (links
// are not followed) named *.toml, directly in the directory, sorted by path.
func Fragments(dirPath string) ([]string, error) {
	entries, err := os.ReadDir(dirPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("read config directory %q: %w", dirPath, err)
	}
	var files []string
	for _, e := range entries {
		if !e.Type().IsRegular() || filepath.Ext(e.Name()) != ".toml" {
			continue
		}
		files = append(files, filepath.Join(dirPath, e.Name()))
	}
	sort.Strings(files)
	return files, nil
}

func readFile(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file %q: %w", path, err)
	}
	m := map[string]any{}
	if _, err := toml.Decode(string(b), &m); err != nil {
		return nil, fmt.Errorf("parse config file %q: %w", path, err)
	}
	return m, nil
}

// Merge applies patch onto base: tables merge key by key, arrays concatenate, anything
// else is replaced by the patch.
func Merge(base, patch any) any {
	switch p := patch.(type) {
	case map[string]any:
		b, ok := base.(map[string]any)
		if !ok {
			return p
		}
		out := make(map[string]any, len(b)+len(p))
		for k, v := range b {
			out[k] = v
		}
		for k, v := range p {
			if old, ok := out[k]; ok {
				out[k] = Merge(old, v)
			} else {
				out[k] = v
			}
		}
		return out
	case []map[string]any:
		if b, ok := base.([]map[string]any); ok {
			return append(append([]map[string]any{}, b...), p...)
		}
		if b, ok := base.([]any); ok {
			out := append([]any{}, b...)
			for _, t := range p {
				out = append(out, t)
			}
			return out
		}
		return p
	case []any:
		switch b := base.(type) {
		case []any:
			return append(append([]any{}, b...), p...)
		case []map[string]any:
			out := make([]any, 0, len(b)+len(p))
			for _, t := range b {
				out = append(out, t)
			}
			return append(out, p...)
		}
		return p
	default:
		return patch
	}
}

// Decode turns a merged document into out. The document is re-encoded so that the TOML
// decoder does the typing; unknown keys are ignored as upstream does.
func Decode(doc map[string]any, out any) error {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
		return fmt.Errorf("encode merged config: %w", err)
	}
	if _, err := toml.Decode(buf.String(), out); err != nil {
		return fmt.Errorf("decode merged config: %w", err)
	}
	return nil
}
