package keys_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"

	"github.com/iotbroker/aziot/sdk/keys"
)

// A host process signs with a key it is authorized for; the key stays in keyd.
func Example() {
	ctx := context.Background()
	k := keys.New(keys.DefaultSocket)
	defer k.Close()
	handle, err := k.CreateKeyPair(ctx, "my-app-key", "ec-p256:*")
	if err != nil {
		fmt.Println("create:", err)
		return
	}
	signer, err := k.Signer(ctx, handle)
	if err != nil {
		fmt.Println("signer:", err)
		return
	}
	digest := sha256.Sum256([]byte("payload"))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	fmt.Println(len(sig) > 0, err)
}

// The Signer serves as a TLS client key, e.g. for X.509 authentication to a hub.
func ExampleSigner_tls() {
	ctx := context.Background()
	k := keys.New(keys.DefaultSocket)
	handle, _ := k.LoadKeyPair(ctx, "device-id")
	signer, err := k.Signer(ctx, handle)
	if err != nil {
		return
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{{
		Certificate: nil, // the DER chain from certd
		PrivateKey:  signer,
	}}}
	_ = cfg
}
