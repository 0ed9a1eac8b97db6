package superconfig

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// vectorsDir is upstream's config-apply vectors, copied verbatim into the repo's testdata
// so that a plain clone tests itself (tests run in the package directory).
const vectorsDir = "../../testdata/vectors/config-apply"

var vectorEnv = Env{Hostname: "my-device", AziotcsUID: 5555, AziotidUID: 5556}

// TestVectors walks every case folder, so a case added there is picked up.
func TestVectors(t *testing.T) {
	entries, err := os.ReadDir(vectorsDir)
	if err != nil {
		t.Fatalf("read vectors: %v", err)
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		n++
		dir := filepath.Join(vectorsDir, e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			in := filepath.Join(dir, "config.toml")
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Parse(in, data)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			out, err := Apply(cfg, vectorEnv)
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			for name, got := range map[string][]byte{
				"keyd.toml": out.Keyd, "certd.toml": out.Certd,
				"identityd.toml": out.Identityd, "tpmd.toml": out.Tpmd,
			} {
				want, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs\n--- got ---\n%s--- want ---\n%s", name, got, want)
				}
			}
			want, err := os.ReadFile(filepath.Join(dir, "device-id"))
			switch {
			case errors.Is(err, fs.ErrNotExist):
				if out.DeviceKey != nil {
					t.Errorf("device key %q, want none", out.DeviceKey)
				}
			case err != nil:
				t.Fatal(err)
			case !bytes.Equal(out.DeviceKey, want):
				t.Errorf("device key %q, want %q", out.DeviceKey, want)
			}
		})
	}
	if n == 0 {
		t.Fatal("no vector folders found")
	}
}
