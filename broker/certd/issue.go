package certd

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"time"
)

// Attribute names as OpenSSL accepts them in a subject, with their OIDs.
var subjectOIDs = map[string]asn1.ObjectIdentifier{
	"CN": {2, 5, 4, 3}, "commonName": {2, 5, 4, 3},
	"C": {2, 5, 4, 6}, "countryName": {2, 5, 4, 6},
	"L": {2, 5, 4, 7}, "localityName": {2, 5, 4, 7},
	"ST": {2, 5, 4, 8}, "stateOrProvinceName": {2, 5, 4, 8},
	"street": {2, 5, 4, 9}, "streetAddress": {2, 5, 4, 9},
	"O": {2, 5, 4, 10}, "organizationName": {2, 5, 4, 10},
	"OU": {2, 5, 4, 11}, "organizationalUnitName": {2, 5, 4, 11},
	"title": {2, 5, 4, 12}, "serialNumber": {2, 5, 4, 5},
	"SN": {2, 5, 4, 4}, "surname": {2, 5, 4, 4},
	"GN": {2, 5, 4, 42}, "givenName": {2, 5, 4, 42},
	"initials": {2, 5, 4, 43}, "pseudonym": {2, 5, 4, 65},
	"DC": {0, 9, 2342, 19200300, 100, 1, 25}, "domainComponent": {0, 9, 2342, 19200300, 100, 1, 25},
	"UID": {0, 9, 2342, 19200300, 100, 1, 1}, "userId": {0, 9, 2342, 19200300, 100, 1, 1},
	"emailAddress": {1, 2, 840, 113549, 1, 9, 1},
}

// configuredSubject builds the subject override of [cert_issuance.<id>], or nil if none.
func configuredSubject(o IssuanceOptions) ([]byte, error) {
	var rdns pkix.RDNSequence
	switch {
	case o.CommonName != "":
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{{Type: subjectOIDs["CN"], Value: truncateCN(o.CommonName)}})
	case len(o.Subject) > 0:
		// Upstream holds the table in a sorted map: entries go out sorted bytewise by key.
		names := make([]string, 0, len(o.Subject))
		for k := range o.Subject {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			oid, ok := subjectOIDs[k]
			if !ok {
				return nil, fmt.Errorf("unknown subject attribute %q", k)
			}
			v := o.Subject[k]
			if isCN(k) {
				v = truncateCN(v)
			}
			rdns = append(rdns, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: v}})
		}
	default:
		return nil, nil
	}
	return asn1.Marshal(rdns)
}

// issuer is what signs: its chain (leaf first) and its key.
type issuer struct {
	chainPEM []byte
	leaf     *x509.Certificate
	signer   crypto.Signer
}

func parseChain(pemText []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(pemText)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errEmptyChain
	}
	return x509.ParseCertificate(block.Bytes)
}

var errEmptyChain = errors.New("invalid issuer")

// parseCSR reads a PEM CSR and checks its self-signature.
func parseCSR(csrPEM string) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode([]byte(csrPEM))
	if block == nil {
		return nil, errors.New("no PEM CERTIFICATE REQUEST block")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("PEM block is %q, not a CERTIFICATE REQUEST", block.Type)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errBadCSRSignature
	}
	return csr, nil
}

var errBadCSRSignature = errors.New("CSR failed to be verified with its public key")

var (
	oidSKID = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidAKID = asn1.ObjectIdentifier{2, 5, 29, 35}
)

func hasExtension(exts []pkix.Extension, oid asn1.ObjectIdentifier) bool {
	for _, e := range exts {
		if e.Id.Equal(oid) {
			return true
		}
	}
	return false
}

// keyIdentifier is OpenSSL's "hash": SHA-1 of the subjectPublicKey bit string.
func keyIdentifier(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:], nil
}

// sign builds the certificate of api-certs.md §4.1 step 5. iss == nil means self-signed
// with selfSigner.
func sign(_ context.Context, csr *x509.CertificateRequest, subject []byte, expiryDays int64, iss *issuer, selfSigner crypto.Signer) ([]byte, error) {
	now := time.Now()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	if expiryDays <= 0 {
		expiryDays = 30
	}
	tmpl := &x509.Certificate{
		SerialNumber:    serial.Add(serial, big.NewInt(1)),
		RawSubject:      csr.RawSubject,
		NotBefore:       now,
		NotAfter:        now.Add(time.Duration(expiryDays) * 24 * time.Hour),
		ExtraExtensions: csr.Extensions,
	}
	if subject != nil {
		tmpl.RawSubject = subject
	}
	if !hasExtension(csr.Extensions, oidSKID) {
		if tmpl.SubjectKeyId, err = keyIdentifier(csr.PublicKey); err != nil {
			return nil, err
		}
	}
	parent, signer := tmpl, selfSigner
	if iss != nil {
		parent, signer = iss.leaf, iss.signer
		if tmpl.NotAfter.After(iss.leaf.NotAfter) {
			tmpl.NotAfter = iss.leaf.NotAfter
		}
		if hasExtension(csr.Extensions, oidAKID) || len(iss.leaf.SubjectKeyId) == 0 {
			// Go would add an AKID from the parent's SKID on its own; upstream adds one
			// only when the CSR has none and the issuer has an SKID.
			parent = withoutSKID(iss.leaf)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, csr.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func withoutSKID(c *x509.Certificate) *x509.Certificate {
	cp := *c
	cp.SubjectKeyId = nil
	return &cp
}
