// Package sdk_test checks the sdk's promise to host processes: importing it pulls in
// only the standard library and the sdk itself (architecture.md §2).
package sdk_test

import (
	"os/exec"
	"strings"
	"testing"
)

func TestSDKImportsOnlyTheStandardLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if !strings.HasPrefix(p, "github.com/iotbroker/aziot/sdk") {
			t.Errorf("the sdk depends on %s", p)
		}
	}
}
