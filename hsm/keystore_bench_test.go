package hsm_test

import (
	"crypto/sha256"
	"testing"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/hsm/file"
)

// fileKeystore is a keystore over files only, as keyd runs without PKCS#11.
func fileKeystore(tb testing.TB) *hsm.Keystore {
	tb.Helper()
	ks, err := hsm.NewKeystore(hsm.Config{HomedirPath: tb.TempDir()}, file.Store{}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ks
}

// The per-operation cost of file keys as keyd pays it: every request resolves the ID
// and uses the key (api-keys.md §4).
func BenchmarkFileKeystore(b *testing.B) {
	ks := fileKeystore(b)
	if err := ks.CreateKey("k", hsm.UsageSign); err != nil {
		b.Fatal(err)
	}
	if err := ks.CreateKeyPair("ec", []hsm.Algorithm{hsm.ECP256}); err != nil {
		b.Fatal(err)
	}
	if err := ks.CreateKeyPair("rsa", []hsm.Algorithm{hsm.RSA2048}); err != nil {
		b.Fatal(err)
	}
	msg := []byte("a message the size of a SAS token's string to sign: hub/devices/d\n1700000000")
	digest := sha256.Sum256(msg)
	digestInfo := append([]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, digest[:]...)
	b.Run("HMAC", func(b *testing.B) {
		for b.Loop() {
			if _, err := ks.HMAC("k", msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SignECDSA", func(b *testing.B) {
		for b.Loop() {
			if _, err := ks.SignECDSA("ec", digest[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("RSAPKCS1", func(b *testing.B) {
		for b.Loop() {
			if _, err := ks.RSAPrivate("rsa", hsm.RSAPKCS1, digestInfo); err != nil {
				b.Fatal(err)
			}
		}
	})
}
