package bench

import (
	"context"
	"crypto/sha256"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/hsm/file"
	"github.com/iotbroker/aziot/hsm/pkcs11"
	"github.com/iotbroker/aziot/hsm/pkcs11/p11test"
	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/sdk/keys"
)

// SoftHSM reads SOFTHSM2_CONF once per process: one token serves every benchmark.
var (
	softOnce sync.Once
	softTok  *p11test.Token
)

func softHSM(b *testing.B) *p11test.Token {
	softOnce.Do(func() {
		p11test.Require(b, "softhsm2-util", p11test.SoftHSMLib)
		dir, err := os.MkdirTemp("", "bench-softhsm-")
		if err != nil {
			b.Fatal(err)
		}
		env, err := p11test.WriteSoftHSMConfig(dir)
		if err != nil {
			b.Fatal(err)
		}
		k, v, _ := strings.Cut(env, "=")
		os.Setenv(k, v)
		softTok = p11test.SoftHSMToken(b, dir, env, "bench")
	})
	if softTok == nil {
		b.Fatal("no SoftHSM token")
	}
	return softTok
}

// BenchmarkHSMSign compares signing with keys in SoftHSM against keys in files, through
// hsm.Keystore in-process (no socket), with as many signers as GOMAXPROCS×8.
func BenchmarkHSMSign(b *testing.B) {
	tk := softHSM(b)
	home := b.TempDir()
	stores := map[string]*hsm.Keystore{}
	for name, cfg := range map[string]hsm.Config{
		"file":    {HomedirPath: home},
		"softhsm": {HomedirPath: home, PKCS11LibPath: tk.Lib, PKCS11BaseSlot: tk.URI()},
	} {
		var p11 hsm.Backend
		if cfg.PKCS11LibPath != "" {
			p11 = pkcs11.New(cfg.PKCS11LibPath, pkcs11.Options{})
		}
		ks, err := hsm.NewKeystore(cfg, file.Store{}, p11)
		if err != nil {
			b.Fatal(err)
		}
		stores[name] = ks
	}
	digest := sha256.Sum256([]byte("bench"))
	info := append([]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, digest[:]...)
	ops := []struct {
		name  string
		setup func(ks *hsm.Keystore, id string) error
		sign  func(ks *hsm.Keystore, id string) error
	}{
		{"ecdsa-p256",
			func(ks *hsm.Keystore, id string) error { return ks.CreateKeyPair(id, []hsm.Algorithm{hsm.ECP256}) },
			func(ks *hsm.Keystore, id string) error { _, err := ks.SignECDSA(id, digest[:]); return err }},
		{"rsa-2048",
			func(ks *hsm.Keystore, id string) error { return ks.CreateKeyPair(id, []hsm.Algorithm{hsm.RSA2048}) },
			func(ks *hsm.Keystore, id string) error { _, err := ks.RSAPrivate(id, hsm.RSAPKCS1, info); return err }},
		{"hmac-sha256",
			func(ks *hsm.Keystore, id string) error { return ks.CreateKey(id, hsm.UsageSign) },
			func(ks *hsm.Keystore, id string) error { _, err := ks.HMAC(id, digest[:]); return err }},
	}
	for _, op := range ops {
		for _, store := range []string{"file", "softhsm"} {
			b.Run(op.name+"/"+store, func(b *testing.B) {
				ks, id := stores[store], store+"-"+op.name
				if err := op.setup(ks, id); err != nil {
					b.Fatal(err)
				}
				b.SetParallelism(8)
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := op.sign(ks, id); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sign/s")
			})
		}
	}
}

// BenchmarkHSMSignThroughKeyd is ECDSA signing through aziotd's keyd socket with the
// key in SoftHSM and in a file, 8 clients at once.
func BenchmarkHSMSignThroughKeyd(b *testing.B) {
	tk := softHSM(b)
	digest := sha256.Sum256([]byte("bench"))
	for _, store := range []string{"file", "softhsm"} {
		b.Run("ecdsa-p256/"+store, func(b *testing.B) {
			dir := testenv.NewStateDir(b)
			if store == "softhsm" {
				// The same token as the in-process benchmark: SoftHSM locks its files
				// between processes.
				testenv.WriteConfig(b, dir, "keyd", "50-pkcs11.toml",
					"[aziot_keys]\npkcs11_lib_path = \""+tk.Lib+"\"\npkcs11_base_slot = \""+tk.URI()+"\"\n")
			}
			testenv.WriteConfig(b, dir, "keyd", "60-max.toml", "max_requests = 64\n")
			d := testenv.StartDev(b, dir, tk.Env...)
			c := keys.NewWithConns(d.Socket("keyd"), 8)
			defer c.Close()
			ctx := context.Background()
			h, err := c.CreateKeyPair(ctx, "bench-"+store, "ec-p256")
			if err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(8)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.SignECDSA(ctx, h, digest[:]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sign/s")
		})
	}
}
