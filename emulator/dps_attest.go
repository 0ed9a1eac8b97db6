package emulator

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"strings"
)

// attestation is the outcome of a successful DPS authentication.
type attestation struct {
	kind       string
	enrollment *Enrollment
	enKey      string
	deviceKeys [2]string         // symmetric: the device's (derived for groups) keys
	leaf       *x509.Certificate // X.509: the presented leaf
	signing    *x509.Certificate // X.509 group: the signing certificate
	ek, srk    []byte            // TPM: EK and SRK public areas from round 1
}

type tpmChallenge struct {
	key     []byte
	ek, srk []byte
}

// attest applies enforcement rows 4 and 5 (emulator.md §2). On failure it has written the
// 401 (or the TPM challenge) and returns false. body is nil for polls.
func (e *Emulator) attest(w http.ResponseWriter, r *http.Request, rc *reqCtx, scopeRaw, scope, regID string, body *registerBody) (*attestation, bool) {
	deny := func(reason, msg string) (*attestation, bool) {
		rc.setVerdict(reason)
		e.writeDPSError(w, http.StatusUnauthorized, dpsCodeUnauthorized, msg)
		return nil, false
	}
	auth := r.Header.Get("Authorization")
	e.mu.Lock()
	tpmEn := e.enrollments[enrollmentKey(scope, false, regID)]
	e.mu.Unlock()
	if tpmEn != nil && tpmEn.Attestation != AttestTPM {
		tpmEn = nil
	}
	if tpmEn != nil || (body != nil && body.TPM != nil) {
		if tpmEn == nil {
			return deny("no TPM enrollment", "Unauthorized")
		}
		if auth == "" {
			return e.tpmRoundOne(w, rc, scope, regID, tpmEn, body)
		}
		e.mu.Lock()
		ch := e.tpmChallenges[regKey(scope, regID)]
		e.mu.Unlock()
		if ch == nil {
			return deny("no TPM challenge issued", "Unauthorized")
		}
		if reason := e.checkDPSToken(auth, scopeRaw, regID, ch.key); reason != "" {
			return deny(reason, "Unauthorized")
		}
		rc.setVerdict("ok")
		return &attestation{kind: AttestTPM, enrollment: tpmEn, enKey: enrollmentKey(scope, false, regID), ek: ch.ek, srk: ch.srk}, true
	}
	if auth != "" {
		tok, err := ParseSAS(auth)
		if err != nil {
			return deny("unparsable token: "+err.Error(), "Unauthorized")
		}
		if reason := e.checkDPSTokenShape(tok, scopeRaw, regID); reason != "" {
			return deny(reason, "Unauthorized")
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if en := e.enrollments[enrollmentKey(scope, false, regID)]; en != nil && en.Attestation == AttestSymmetric {
			if !tok.VerifyAnyKey(en.PrimaryKey, en.SecondaryKey) {
				return deny("signature mismatch", "Unauthorized")
			}
			rc.setVerdict("ok")
			return &attestation{kind: AttestSymmetric, enrollment: en, enKey: enrollmentKey(scope, false, regID), deviceKeys: [2]string{en.PrimaryKey, en.SecondaryKey}}, true
		}
		for k, en := range e.enrollments {
			if !en.Group || en.Attestation != AttestSymmetric || !strings.EqualFold(en.IDScope, scope) {
				continue
			}
			p, err1 := DeriveGroupKey(en.PrimaryKey, regID)
			s, err2 := DeriveGroupKey(en.SecondaryKey, regID)
			if err1 != nil || err2 != nil {
				continue
			}
			if tok.VerifyAnyKey(p, s) {
				rc.setVerdict("ok (group " + en.ID + ")")
				return &attestation{kind: AttestSymmetric, enrollment: en, enKey: k, deviceKeys: [2]string{p, s}}, true
			}
		}
		// Unknown registration and wrong key look the same: existence is not revealed.
		return deny("no enrollment matches", "Unauthorized")
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return e.attestX509(rc, scope, regID, r.TLS.PeerCertificates, deny)
	}
	return deny("no credentials", "Unauthorized")
}

// checkDPSToken parses and fully checks a DPS SAS token against one key.
func (e *Emulator) checkDPSToken(auth, scopeRaw, regID string, key []byte) string {
	tok, err := ParseSAS(auth)
	if err != nil {
		return "unparsable token: " + err.Error()
	}
	if reason := e.checkDPSTokenShape(tok, scopeRaw, regID); reason != "" {
		return reason
	}
	if !tok.VerifyKey(key) {
		return "signature mismatch"
	}
	return ""
}

// checkDPSTokenShape checks sr, skn and expiry (cloud-dps.md §3 steps 4-5).
func (e *Emulator) checkDPSTokenShape(tok *SASToken, scopeRaw, regID string) string {
	if !strings.EqualFold(tok.SR, scopeRaw+"/registrations/"+regID) {
		return "sr does not match the request path"
	}
	if !tok.HasSKN || tok.SKN != "registration" {
		return "skn must be registration"
	}
	if e.clk.tokenExpired(tok) {
		return "token expired"
	}
	return ""
}

func (e *Emulator) attestX509(rc *reqCtx, scope, regID string, chain []*x509.Certificate, deny func(string, string) (*attestation, bool)) (*attestation, bool) {
	leaf := chain[0]
	if leaf.Subject.CommonName != regID {
		return deny("leaf CN does not equal the registration ID", "Invalid certificate.")
	}
	if !e.clk.certValid(leaf.NotBefore, leaf.NotAfter) {
		return deny("leaf outside its validity", "Invalid certificate.")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.enrollments[enrollmentKey(scope, false, regID)]; en != nil && en.Attestation == AttestX509 {
		leafSum := sha256.Sum256(leaf.Raw)
		for _, p := range []string{en.PrimaryCertPEM, en.SecondaryCertPEM} {
			if p == "" {
				continue
			}
			certs, err := ParseCertsPEM([]byte(p))
			if err != nil {
				continue
			}
			s := sha256.Sum256(certs[0].Raw)
			if bytes.Equal(s[:], leafSum[:]) {
				rc.setVerdict("ok")
				return &attestation{kind: AttestX509, enrollment: en, enKey: enrollmentKey(scope, false, regID), leaf: leaf}, true
			}
		}
		return deny("leaf does not match the individual enrollment", "Invalid certificate.")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for k, en := range e.enrollments {
		if !en.Group || en.Attestation != AttestX509 || !strings.EqualFold(en.IDScope, scope) {
			continue
		}
		certs, err := ParseCertsPEM([]byte(en.SigningCertPEM))
		if err != nil {
			continue
		}
		roots := x509.NewCertPool()
		roots.AddCert(certs[0])
		// The signing certificate is the trust anchor even when it is an intermediate.
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: e.clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			continue
		}
		if en.Unverified {
			return deny("group CA not verified", "CA certificate not found.")
		}
		rc.setVerdict("ok (group " + en.ID + ")")
		return &attestation{kind: AttestX509, enrollment: en, enKey: k, leaf: leaf, signing: certs[0]}, true
	}
	return deny("no enrollment group validates the chain", "CA certificate not found.")
}

// tpmRoundOne answers a TPM register PUT without Authorization with the 401 challenge
// (cloud-dps.md §6).
func (e *Emulator) tpmRoundOne(w http.ResponseWriter, rc *reqCtx, scope, regID string, en *Enrollment, body *registerBody) (*attestation, bool) {
	fail := func(reason string) (*attestation, bool) {
		rc.setVerdict(reason)
		e.writeDPSError(w, http.StatusUnauthorized, dpsCodeUnauthorized, "Unauthorized")
		return nil, false
	}
	if body == nil || body.TPM == nil {
		return fail("TPM request without Authorization and without tpm")
	}
	ek, err := base64.StdEncoding.DecodeString(body.TPM.EndorsementKey)
	if err != nil {
		return fail("endorsementKey is not base64")
	}
	srk, err := base64.StdEncoding.DecodeString(body.TPM.StorageRootKey)
	if err != nil || len(srk) == 0 {
		return fail("storageRootKey missing or not base64")
	}
	want, _ := base64.StdEncoding.DecodeString(en.EndorsementKey)
	if !bytes.Equal(stripTPM2BSize(ek), stripTPM2BSize(want)) {
		return fail("endorsement key does not match the enrollment")
	}
	key := e.randomBytes(32)
	blob, err := MakeTPMAuthenticationKey(ek, srk, key, e.randomBytes)
	if err != nil {
		return fail("cannot wrap key for this TPM: " + err.Error())
	}
	e.mu.Lock()
	e.tpmChallenges[regKey(scope, regID)] = &tpmChallenge{key: key, ek: ek, srk: srk}
	e.mu.Unlock()
	rc.setVerdict("TPM challenge")
	writeJSON(w, http.StatusUnauthorized, map[string]any{
		"message":                      "Authorization required, resend request using supplied key",
		"authenticationKey":            base64.StdEncoding.EncodeToString(blob),
		"unencryptedAuthenticationKey": nil,
		"keyName":                      "registration",
	})
	return nil, false
}

// stripTPM2BSize removes a TPM2B size prefix when it matches the remaining length, so
// enrollment copies with or without it compare equal.
func stripTPM2BSize(b []byte) []byte {
	if len(b) >= 2 && int(b[0])<<8|int(b[1]) == len(b)-2 {
		return b[2:]
	}
	return b
}
