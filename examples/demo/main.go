// Command demo drives a running broker through the Go SDK as a host process would: it
// creates key pairs in keyd, signs with one, and has certd issue a self-signed local CA
// and a device certificate signed by that CA, as configured in certd's
// [cert_issuance] (see scripts/demo.sh). It writes ca.pem and device.pem for openssl.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/iotbroker/aziot/sdk/certs"
	"github.com/iotbroker/aziot/sdk/keys"
)

func main() {
	run := flag.String("run", "", "folder holding keyd.sock and certd.sock")
	out := flag.String("out", ".", "where to write ca.pem and device.pem")
	flag.Parse()
	if err := demo(context.Background(), *run, *out); err != nil {
		log.Fatal(err)
	}
}

func demo(ctx context.Context, run, out string) error {
	k := keys.New(filepath.Join(run, "keyd.sock"))
	c := certs.New(filepath.Join(run, "certd.sock"))
	defer k.Close()
	defer c.Close()

	// A key pair in keyd: the private key never leaves the service.
	caHandle, err := k.CreateKeyPair(ctx, "demo-ca", "ec-p256")
	if err != nil {
		return fmt.Errorf("create CA key pair: %w", err)
	}
	caSigner, err := k.Signer(ctx, caHandle)
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte("hello from the demo"))
	sig, err := caSigner.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	fmt.Printf("keyd signed a digest: %d-byte ECDSA signature, verifies: %v\n", len(sig),
		ecdsa.VerifyASN1(caSigner.Public().(*ecdsa.PublicKey), digest[:], sig))

	// certd self-signs the CA ([cert_issuance.demo-ca] method = "self_signed").
	caCSR, err := csr(caSigner, "demo CA", true)
	if err != nil {
		return err
	}
	caPEM, err := c.Create(ctx, "demo-ca", caCSR, nil)
	if err != nil {
		return fmt.Errorf("issue CA certificate: %w", err)
	}

	// certd signs the device with the CA ([cert_issuance.demo-device] method = "local_ca").
	devHandle, err := k.CreateKeyPair(ctx, "demo-device", "rsa-2048")
	if err != nil {
		return err
	}
	devSigner, err := k.Signer(ctx, devHandle)
	if err != nil {
		return err
	}
	devCSR, err := csr(devSigner, "demo-device", false)
	if err != nil {
		return err
	}
	chain, err := c.Create(ctx, "demo-device", devCSR, nil)
	if err != nil {
		return fmt.Errorf("issue device certificate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "ca.pem"), []byte(caPEM), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "device.pem"), []byte(chain), 0o644); err != nil {
		return err
	}
	fmt.Println("certd issued demo-ca (self-signed) and demo-device (signed by demo-ca)")
	return nil
}

// csr builds a CSR signed by a keyd-backed signer; a CA CSR asks for CA extensions,
// which certd copies into the certificate.
func csr(signer crypto.Signer, cn string, ca bool) (string, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	if ca {
		bc, _ := asn1.Marshal(struct{ IsCA bool }{true})
		ku, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{0x06}, BitLength: 7}) // keyCertSign, cRLSign
		tmpl.ExtraExtensions = []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
			{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: ku},
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, signer)
	if err != nil {
		return "", fmt.Errorf("create CSR for %s: %w", cn, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}
