// Package e2e runs keyd's end-to-end suite, through the real aziotd socket, against
// PKCS#11 tokens: SoftHSM2 and tpm2-pkcs11 on swtpm. It is the same suite as the file
// store's (internal/testenv.RunKeydSuite): one suite, several backends.
package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/iotbroker/aziot/hsm/pkcs11/p11test"
	"github.com/iotbroker/aziot/internal/testenv"
)

// backend is keyd with its base slot in tk.
func backend(name string, tk *p11test.Token, extra string) testenv.KeydBackend {
	return testenv.KeydBackend{
		Name: name,
		Config: func(testing.TB) string {
			return fmt.Sprintf("[aziot_keys]\npkcs11_lib_path = %q\npkcs11_base_slot = %q\n%s", tk.Lib, tk.URI(), extra)
		},
		Env: tk.Env,
	}
}

// object is one entry of `pkcs11-tool --list-objects`.
type object struct {
	kind, label, access string
}

var objectStart = regexp.MustCompile(`^(Private Key|Public Key|Secret Key|Certificate|Data) Object`)

func listObjects(t testing.TB, tk *p11test.Token) []object {
	t.Helper()
	var out []object
	for _, line := range strings.Split(tk.Tool(t, "--list-objects"), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case objectStart.MatchString(line):
			out = append(out, object{kind: objectStart.FindStringSubmatch(line)[1]})
		case len(out) == 0:
		case strings.HasPrefix(trimmed, "label:"):
			out[len(out)-1].label = strings.TrimSpace(strings.TrimPrefix(trimmed, "label:"))
		case strings.HasPrefix(trimmed, "Access:"):
			out[len(out)-1].access = strings.TrimSpace(strings.TrimPrefix(trimmed, "Access:"))
		}
	}
	return out
}

// checkNotExtractable: every private and secret key keyd made is sensitive and not
// extractable, as pkcs11-tool (not our code) reads the token; keys generated in the
// token (not imported) are also "never extractable" and "local".
func checkNotExtractable(t testing.TB, tk *p11test.Token, generated, imported []string) {
	t.Helper()
	objs := listObjects(t, tk)
	access := map[string]map[string]bool{}
	for _, o := range objs {
		if o.kind != "Private Key" && o.kind != "Secret Key" {
			continue
		}
		flags := map[string]bool{}
		for _, f := range strings.Split(o.access, ", ") {
			flags[f] = true
		}
		access[o.label] = flags
		if !flags["sensitive"] || flags["extractable"] {
			t.Errorf("%s %q is not sensitive and non-extractable: %q", o.kind, o.label, o.access)
		}
	}
	for _, l := range append(generated, imported...) {
		if access[l] == nil {
			t.Errorf("no private or secret key %q in the token; objects: %+v", l, objs)
		}
	}
	for _, l := range generated {
		if f := access[l]; f != nil && (!f["never extractable"] || !f["local"]) {
			t.Errorf("generated key %q is not never-extractable and local: %v", l, f)
		}
	}
}

func TestKeydSuiteSoftHSM(t *testing.T) {
	t.Parallel()
	tk := p11test.SoftHSM(t)
	testenv.RunKeydSuite(t, backend("softhsm", tk, ""))
	// Keys by ID are in the token under their ID: the suite's key pairs, its generated
	// symmetric key, and the handle validation key.
	checkNotExtractable(t, tk,
		[]string{"ec-1", "rsa-rsa-2048", "rsa-rsa-4096", "mv-dst", "handle-target", "handle-validation-key"},
		[]string{"sym-gen", "aead-1", "master"})
}

func TestKeydSuiteTPM(t *testing.T) {
	t.Parallel()
	tk := p11test.TPM(t)
	b := backend("tpm2-pkcs11", tk, "")
	// swtpm has no resource manager: one operation per login (docs/hsm.md).
	b.Env = append(b.Env, "AZIOT_KEYD_PKCS11_SESSIONS=0")
	// A TPM has no AES-GCM nor generic-secret keys: symmetric keys go to files, as
	// upstream falls back; swtpm makes RSA keys up to 3072 bits.
	b.SymmetricInFiles = true
	b.Unsupported = map[string]bool{"rsa-4096": true}
	testenv.RunKeydSuite(t, b)
}
