package pkcs11_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/hsm/pkcs11"
	"github.com/iotbroker/aziot/hsm/pkcs11/p11test"
)

// SoftHSM reads SOFTHSM2_CONF once per process (at C_Initialize), so the tests of this
// package share one configuration directory; each test makes its own token in it.
var confDir, confEnv string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "softhsm-unit-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	confDir = dir
	if confEnv, err = p11test.WriteSoftHSMConfig(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	k, v, _ := strings.Cut(confEnv, "=")
	os.Setenv(k, v)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var labelSeq = 0

// newToken makes a fresh token for t and a backend over SoftHSM. Tokens made after the
// library loaded are invisible to it until it reloads, which the backend does by
// itself when a URI names an unknown token; the short RetryDelay lets it do so at once.
func newToken(t *testing.T) (*p11test.Token, *pkcs11.Backend) {
	t.Helper()
	p11test.Require(t, "softhsm2-util", p11test.SoftHSMLib)
	labelSeq++
	tk := p11test.SoftHSMToken(t, confDir, confEnv, fmt.Sprintf("unit%d-%d", labelSeq, time.Now().UnixNano()%1e6))
	b := pkcs11.New(p11test.SoftHSMLib, pkcs11.Options{RetryDelay: time.Millisecond, PINRetryDelay: time.Second})
	return tk, b
}

func loc(tk *p11test.Token, object string) hsm.Location {
	return hsm.Location{URI: tk.ObjectURI(object)}
}
