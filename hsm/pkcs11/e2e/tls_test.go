package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/iotbroker/aziot/hsm/pkcs11/p11test"
	"github.com/iotbroker/aziot/internal/testenv"
)

// TestTLSClientAuthWithTokenKey: a TLS server that requires client certificates
// accepts a client whose private key is in SoftHSM, used through sdk/keys' Signer over
// the real keyd socket. The key never leaves the token (pkcs11-tool shows it
// non-extractable).
func TestTLSClientAuthWithTokenKey(t *testing.T) {
	t.Parallel()
	tk := p11test.SoftHSM(t)
	env := testenv.StartKeyd(t, backend("softhsm", tk, ""), nil)
	ctx := context.Background()

	// A CA made here signs the client certificate and is the server's client trust.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		alg     string
		version uint16 // RSA in TLS 1.2 signs PKCS#1 v1.5, in TLS 1.3 PSS
	}{{"ec-p256", tls.VersionTLS13}, {"rsa-2048", tls.VersionTLS13}, {"rsa-2048", tls.VersionTLS12}} {
		t.Run(tc.alg, func(t *testing.T) {
			id := "tls-client-" + tc.alg
			h, err := env.Keys.CreateKeyPair(ctx, id, tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			signer, err := env.Keys.Signer(ctx, h)
			if err != nil {
				t.Fatal(err)
			}
			leafTmpl := &x509.Certificate{
				SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: id},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
				KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}
			leaf, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, signer.Public(), caKey)
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(srv.Certificate())
			client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
				RootCAs:      roots,
				Certificates: []tls.Certificate{{Certificate: [][]byte{leaf}, PrivateKey: signer}},
				MinVersion:   tc.version, MaxVersion: tc.version,
			}}}
			resp, err := client.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "hello "+id {
				t.Fatalf("server answered %q", body)
			}
		})
	}
	checkNotExtractable(t, tk, []string{"tls-client-ec-p256", "tls-client-rsa-2048"}, nil)
}
