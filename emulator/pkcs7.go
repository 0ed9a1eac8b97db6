package emulator

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

var (
	oidData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
)

func tlv(class, tag int, compound bool, content ...[]byte) []byte {
	var b []byte
	for _, c := range content {
		b = append(b, c...)
	}
	out, _ := asn1.Marshal(asn1.RawValue{Class: class, Tag: tag, IsCompound: compound, Bytes: b})
	return out
}

// CertsOnly encodes a degenerate PKCS#7 signedData ("certs-only": no signers, no content)
// carrying certs in order (RFC 7030 §4.1.3, §4.2.3).
func CertsOnly(certs []*x509.Certificate) []byte {
	version, _ := asn1.Marshal(1)
	dataOID, _ := asn1.Marshal(oidData)
	sdOID, _ := asn1.Marshal(oidSignedData)
	parts := [][]byte{
		version,
		tlv(asn1.ClassUniversal, asn1.TagSet, true), // digestAlgorithms
		tlv(asn1.ClassUniversal, asn1.TagSequence, true, dataOID),
	}
	if len(certs) > 0 {
		var raw [][]byte
		for _, c := range certs {
			raw = append(raw, c.Raw)
		}
		parts = append(parts, tlv(asn1.ClassContextSpecific, 0, true, raw...))
	}
	parts = append(parts, tlv(asn1.ClassUniversal, asn1.TagSet, true)) // signerInfos
	sd := tlv(asn1.ClassUniversal, asn1.TagSequence, true, parts...)
	return tlv(asn1.ClassUniversal, asn1.TagSequence, true, sdOID, tlv(asn1.ClassContextSpecific, 0, true, sd))
}

// base64Lines wraps standard base64 at 64 characters with CRLF, as EST servers commonly
// send it (RFC 8951 allows any whitespace).
func base64Lines(der []byte) []byte {
	s := base64.StdEncoding.EncodeToString(der)
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64] + "\r\n")
		s = s[64:]
	}
	b.WriteString(s + "\r\n")
	return []byte(b.String())
}

// ParseCertsOnly decodes a certs-only PKCS#7 (DER) and returns its certificates. Tests use
// it to check EST answers.
func ParseCertsOnly(der []byte) ([]*x509.Certificate, error) {
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"explicit,tag:0"`
	}
	if _, err := asn1.Unmarshal(der, &ci); err != nil {
		return nil, fmt.Errorf("pkcs7 ContentInfo: %w", err)
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, errors.New("pkcs7: not signedData")
	}
	var sd struct {
		Version          int
		DigestAlgorithms asn1.RawValue
		EncapContentInfo asn1.RawValue
		Certificates     asn1.RawValue `asn1:"optional,tag:0"`
		SignerInfos      asn1.RawValue
	}
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		return nil, fmt.Errorf("pkcs7 SignedData: %w", err)
	}
	if len(sd.Certificates.Bytes) == 0 {
		return nil, nil
	}
	return x509.ParseCertificates(sd.Certificates.Bytes)
}
