package keyd

import (
	"log/slog"

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
	return pkcs11.New(libPath, pkcs11.Options{Log: log})
}
