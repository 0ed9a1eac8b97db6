package main

import (
	"testing"

	"github.com/iotbroker/aziot/internal/testenv"
)

// The keyd suite on the file store; hsm/pkcs11 runs the same suite on tokens.
func TestKeydFileStore(t *testing.T) {
	testenv.RunKeydSuite(t, testenv.FileBackend)
}
