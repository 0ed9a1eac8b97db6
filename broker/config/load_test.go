package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

type principal struct {
	UID  uint32   `toml:"uid"`
	Keys []string `toml:"keys"`
}

type sample struct {
	MaxRequests int               `toml:"max_requests"`
	AziotKeys   map[string]string `toml:"aziot_keys"`
	Principals  []principal       `toml:"principal"`
}

func write(t *testing.T, path, s string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadMergesInPathOrder(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "config.toml")
	d := filepath.Join(dir, "config.d")
	write(t, main, "max_requests = 3\n[aziot_keys]\nhomedir_path = \"/a\"\n[[principal]]\nuid = 1\nkeys = [\"a\"]\n")
	write(t, filepath.Join(d, "20-b.toml"), "max_requests = 7\n[[principal]]\nuid = 3\nkeys = [\"c\"]\n")
	write(t, filepath.Join(d, "10-a.toml"), "[aziot_keys]\npkcs11_lib_path = \"/lib\"\n[[principal]]\nuid = 2\nkeys = [\"b\"]\n")
	write(t, filepath.Join(d, "ignored.txt"), "max_requests = 99\n")
	write(t, filepath.Join(d, "sub", "x.toml"), "max_requests = 98\n")
	os.Symlink(filepath.Join(d, "20-b.toml"), filepath.Join(d, "30-link.toml"))

	var got sample
	if err := Load(main, d, &got); err != nil {
		t.Fatal(err)
	}
	want := sample{
		MaxRequests: 7,
		AziotKeys:   map[string]string{"homedir_path": "/a", "pkcs11_lib_path": "/lib"},
		Principals:  []principal{{1, []string{"a"}}, {2, []string{"b"}}, {3, []string{"c"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestLoadMissingFilesIsEmpty(t *testing.T) {
	var got sample
	if err := Load("/nonexistent/config.toml", "/nonexistent/config.d", &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sample{}) {
		t.Fatalf("got %+v", got)
	}
}

func TestLoadParseErrorNamesFile(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "config.toml")
	write(t, main, "max_requests = \n")
	var got sample
	err := Load(main, "", &got)
	if err == nil || !strings.Contains(err.Error(), main) {
		t.Fatalf("err = %v", err)
	}
}

func TestMergeRules(t *testing.T) {
	cases := []struct {
		name        string
		base, patch any
		want        any
	}{
		{"scalar replaced", int64(1), int64(2), int64(2)},
		{"table replaces scalar", int64(1), map[string]any{"a": int64(1)}, map[string]any{"a": int64(1)}},
		{"arrays concatenate", []any{"a"}, []any{"b"}, []any{"a", "b"}},
		{"array replaces table", map[string]any{"a": int64(1)}, []any{"b"}, []any{"b"}},
		{"tables merge", map[string]any{"a": int64(1), "b": map[string]any{"c": int64(1)}},
			map[string]any{"b": map[string]any{"d": int64(2)}},
			map[string]any{"a": int64(1), "b": map[string]any{"c": int64(1), "d": int64(2)}}},
	}
	for _, c := range cases {
		if got := Merge(c.base, c.patch); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %#v want %#v", c.name, got, c.want)
		}
	}
}

// FuzzMerge: merging any two parsed documents never panics and decodes or errors cleanly.
func FuzzMerge(f *testing.F) {
	f.Add("max_requests = 1\n[[principal]]\nuid = 1\n", "[[principal]]\nuid = 2\nkeys = [\"a\"]\n")
	f.Add("[aziot_keys]\na = 1\n", "aziot_keys = 5\n")
	f.Fuzz(func(t *testing.T, a, b string) {
		var da, db map[string]any
		if _, err := toml.Decode(a, &da); err != nil {
			return
		}
		if _, err := toml.Decode(b, &db); err != nil {
			return
		}
		merged, ok := Merge(da, db).(map[string]any)
		if !ok && db != nil {
			t.Fatalf("merge of tables is not a table")
		}
		var out sample
		_ = Decode(merged, &out)
	})
}
