package emulator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CA is a certificate authority of the test PKI: its certificate, key and the chain above
// it (excluding itself, root last).
type CA struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
}

// PKI is the generated (or loaded) test PKI. Root signs every server leaf; DPSCA issues
// certificates for DPS `csr` requests; BootstrapCA issues EST bootstrap certificates.
// Each EST label has its own issuing CA (an intermediate under Root).
type PKI struct {
	Root        *CA
	Untrusted   *CA // a root nobody trusts, for the tls_fail "untrusted" knob
	DPSCA       *CA
	BootstrapCA *CA
}

func randSerial() (*big.Int, error) {
	// At least 64 random bits (cloud-est.md §6); 128 keeps collisions irrelevant.
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newKey() (crypto.Signer, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func skid(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	h := sha1.Sum(der)
	return h[:]
}

// NewRootCA creates a self-signed CA valid for ten years.
func NewRootCA(cn string) (*CA, error) {
	key, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, fmt.Errorf("root serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          skid(key.Public()),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("root certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// NewIntermediate creates a CA signed by parent.
func (parent *CA) NewIntermediate(cn string) (*CA, error) {
	key, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("intermediate key: %w", err)
	}
	cert, err := parent.Issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, key.Public(), time.Now().Add(-time.Hour), time.Now().AddDate(5, 0, 0))
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Chain: append([]*x509.Certificate{parent.Cert}, parent.Chain...)}, nil
}

// Issue signs tmpl (subject, extensions) for pub with the given validity. Serial, SKID and
// AKID are filled in here.
func (parent *CA) Issue(tmpl *x509.Certificate, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := randSerial()
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	tmpl.SubjectKeyId = skid(pub)
	tmpl.AuthorityKeyId = parent.Cert.SubjectKeyId
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.Cert, pub, parent.Key)
	if err != nil {
		return nil, fmt.Errorf("issuing %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// IssueLeaf creates a new key and an end-entity certificate for cn (client and server
// auth), valid from now-1m for the given duration. Tests use it for device certificates.
func (parent *CA) IssueLeaf(cn string, validity time.Duration, dns []string, ips []net.IP) (*x509.Certificate, crypto.Signer, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, fmt.Errorf("leaf key: %w", err)
	}
	now := time.Now()
	cert, err := parent.Issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}, key.Public(), now.Add(-time.Minute), now.Add(validity))
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// NewSelfSigned creates a self-signed end-entity certificate (individual X.509 enrollments).
func NewSelfSigned(cn string, validity time.Duration) (*x509.Certificate, crypto.Signer, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed %q: %w", cn, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed %q: %w", cn, err)
	}
	return c, key, nil
}

func newPKI() (*PKI, error) {
	root, err := NewRootCA("aziot emulator test root")
	if err != nil {
		return nil, err
	}
	untrusted, err := NewRootCA("aziot emulator untrusted root")
	if err != nil {
		return nil, err
	}
	dps, err := root.NewIntermediate("aziot emulator DPS issuing CA")
	if err != nil {
		return nil, err
	}
	boot, err := NewRootCA("aziot emulator EST bootstrap CA")
	if err != nil {
		return nil, err
	}
	return &PKI{Root: root, Untrusted: untrusted, DPSCA: dps, BootstrapCA: boot}, nil
}

// CertPEM encodes certificates as PEM.
func CertPEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// KeyPEM encodes a private key as PKCS#8 PEM.
func KeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertsPEM decodes every CERTIFICATE block.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no CERTIFICATE block found")
	}
	return out, nil
}

// ParseKeyPEM decodes a PKCS#8, PKCS#1 or SEC1 private key.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no private key block found")
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse PKCS#8 key: %w", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, errors.New("key is not a signer")
			}
			return s, nil
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(blk.Bytes)
		}
	}
}

// Thumbprints returns upper-case hex SHA-1 and SHA-256 of the DER certificate.
func Thumbprints(c *x509.Certificate) (sha1Hex, sha256Hex string) {
	s1 := sha1.Sum(c.Raw)
	s2 := sha256.Sum256(c.Raw)
	return strings.ToUpper(hex.EncodeToString(s1[:])), strings.ToUpper(hex.EncodeToString(s2[:]))
}

// saveCA writes name.pem (cert + chain) and name.key into dir.
func saveCA(dir, name string, ca *CA) error {
	kp, err := KeyPEM(ca.Key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), CertPEM(append([]*x509.Certificate{ca.Cert}, ca.Chain...)...), 0o644); err != nil {
		return fmt.Errorf("write %s.pem: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".key"), kp, 0o600); err != nil {
		return fmt.Errorf("write %s.key: %w", name, err)
	}
	return nil
}

// LoadCA reads a CA from certPath (cert first, then its chain) and keyPath.
func LoadCA(certPath, keyPath string) (*CA, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	certs, err := ParseCertsPEM(cb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := ParseKeyPEM(kb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	return &CA{Cert: certs[0], Key: key, Chain: certs[1:]}, nil
}

// loadOrCreatePKI loads dir/{root,untrusted,dps-ca,bootstrap-ca}.{pem,key} when present,
// else generates them and (when dir is set) saves them, so a restarted daemon keeps the
// root its clients trust.
func loadOrCreatePKI(dir string) (*PKI, error) {
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "root.pem")); err == nil {
			p := &PKI{}
			var err error
			for name, dst := range map[string]**CA{"root": &p.Root, "untrusted": &p.Untrusted, "dps-ca": &p.DPSCA, "bootstrap-ca": &p.BootstrapCA} {
				if *dst, err = LoadCA(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")); err != nil {
					return nil, err
				}
			}
			return p, nil
		}
	}
	p, err := newPKI()
	if err != nil {
		return nil, err
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create PKI dir: %w", err)
		}
		for name, ca := range map[string]*CA{"root": p.Root, "untrusted": p.Untrusted, "dps-ca": p.DPSCA, "bootstrap-ca": p.BootstrapCA} {
			if err := saveCA(dir, name, ca); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// keyUsageFor returns the leaf key usage RFC 5280 profiles expect for the key type.
func keyUsageFor(pub crypto.PublicKey) x509.KeyUsage {
	if _, ok := pub.(*rsa.PublicKey); ok {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}

func pkixName(cn string) pkix.Name { return pkix.Name{CommonName: cn} }
