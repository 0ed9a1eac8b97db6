package keyd

import (
	"log/slog"
	"os"
	"strconv"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/hsm/file"
	"github.com/iotbroker/aziot/hsm/pkcs11"
)

func fileBackend() hsm.Backend { return file.Store{} }

// PKCS11Backend is the PKCS#11 store for [aziot_keys] pkcs11_lib_path, or nil when the
// path is empty. The library loads on first use: a missing or broken one fails only
// the requests for PKCS#11 keys, with an error naming the URI, and is retried later.
func PKCS11Backend(libPath string, log *slog.Logger) hsm.Backend {
	if libPath == "" {
		return nil // an untyped nil: keyd tests the interface against nil
	}
	opts := pkcs11.Options{Log: log}
	// [aziot_keys] takes no other settings (config.md §3.1), so session handling is set
	// from the environment: 0 for a TPM without resource manager (docs/hsm.md).
	if v, err := strconv.Atoi(os.Getenv("AZIOT_KEYD_PKCS11_SESSIONS")); err == nil {
		opts.MaxSessions, opts.OneShot = v, v == 0
	}
	return pkcs11.New(libPath, opts)
}
