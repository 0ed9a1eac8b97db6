package emulator

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	estPrefix      = "/.well-known/est/"
	pkcs7CertsOnly = "application/pkcs7-mime; smime-type=certs-only"
)

var oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}

// estLabel is one EST CA label.
type estLabel struct {
	cfg      ESTLabelConfig
	ca       *CA
	validity time.Duration
}

func (e *Emulator) addESTLabel(lc ESTLabelConfig) error {
	l := &estLabel{cfg: lc, validity: lc.Validity}
	if l.validity == 0 {
		l.validity = 30 * 24 * time.Hour
	}
	if l.cfg.Policy == "" {
		l.cfg.Policy = "basic_or_cert"
	}
	switch l.cfg.Policy {
	case "basic", "cert", "basic_or_cert", "basic_and_cert", "none":
	default:
		return fmt.Errorf("EST label %q: unknown policy %q", lc.Label, lc.Policy)
	}
	var err error
	if lc.CACertPath != "" {
		l.ca, err = LoadCA(lc.CACertPath, lc.CAKeyPath)
	} else {
		l.ca, err = e.pki.Root.NewIntermediate("aziot emulator EST CA " + lc.Label)
	}
	if err != nil {
		return fmt.Errorf("EST label %q: %w", lc.Label, err)
	}
	if e.est == nil {
		e.est = map[string]*estLabel{}
	}
	e.est[lc.Label] = l
	return nil
}

// ESTCA returns the issuing CA of a label (tests issue EST identities from it).
func (e *Emulator) ESTCA(label string) *CA {
	e.mu.Lock()
	defer e.mu.Unlock()
	if l := e.est[label]; l != nil {
		return l.ca
	}
	return nil
}

// SetESTValidity changes the validity of certificates issued for a label (cert_rotation
// knob: "very short validity").
func (e *Emulator) SetESTValidity(label string, d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if l := e.est[label]; l != nil {
		l.validity = d
	}
}

// RefuseBootstrapAfterFirstUse makes a bootstrap certificate usable once (cert_rotation).
func (e *Emulator) RefuseBootstrapAfterFirstUse(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.estRefuseBoot = on
}

// RevokeSubject denies enrollment to, and client authentication by, a certificate subject
// CN (cert_rotation knob).
func (e *Emulator) RevokeSubject(cn string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.estRevoked[cn] = true
}

func estClassify(r *http.Request) (string, string) {
	if !strings.HasPrefix(r.URL.Path, estPrefix) {
		return "unknown", ""
	}
	segs := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, estPrefix), "/"), "/")
	switch len(segs) {
	case 1:
		return segs[0], ""
	case 2:
		return segs[1], segs[0]
	}
	return "unknown", ""
}

func estShape(w http.ResponseWriter, status int, kind string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, "%d %s\n", status, http.StatusText(status))
}

func estFail(w http.ResponseWriter, rc *reqCtx, status int, reason string) {
	rc.setVerdict(reason)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="est"`)
	}
	estShape(w, status, "")
}

func (e *Emulator) estHandler() http.Handler {
	return e.serve("est", func() string { return "est" }, estClassify, estShape, func(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
		e.mu.Lock()
		l := e.est[rc.id]
		e.mu.Unlock()
		if l == nil {
			estFail(w, rc, http.StatusNotFound, "unknown label")
			return
		}
		switch {
		case rc.route == "cacerts" && r.Method == http.MethodGet:
			if l.cfg.CACertsRequireAuth {
				if _, ok := e.estAuthenticate(r, rc, l, nil, false); !ok {
					estFail(w, rc, http.StatusUnauthorized, "authentication failed")
					return
				}
			}
			e.estRespond(w, rc, append([]*x509.Certificate{l.ca.Cert}, l.ca.Chain...), nil)
		case (rc.route == "simpleenroll" || rc.route == "simplereenroll") && r.Method == http.MethodPost:
			e.estEnroll(w, r, rc, l, rc.route == "simplereenroll")
		default:
			estFail(w, rc, http.StatusNotFound, "unsupported EST operation")
		}
	})
}

// estRespond writes a certs-only answer, applying the est_pending and malformed knobs.
func (e *Emulator) estRespond(w http.ResponseWriter, rc *reqCtx, certs, full []*x509.Certificate) {
	if f := rc.fault(FaultESTPending); f != nil {
		ra := f.RetryAfter
		if ra == 0 {
			ra = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(ra))
		w.WriteHeader(http.StatusAccepted)
		return
	}
	ct := pkcs7CertsOnly
	var body []byte
	if f := rc.fault(FaultMalformed); f != nil {
		switch f.Variant {
		case MalformedContentType:
			ct = "application/octet-stream"
		case MalformedContentTypeUpper:
			ct = "Application/PKCS7-MIME; smime-type=certs-only"
		case MalformedNoCerts:
			certs = nil
		case MalformedFullChain:
			if full != nil {
				certs = full
			}
		case MalformedPEM:
			body = []byte("-----BEGIN PKCS7-----\n" + string(base64Lines(CertsOnly(certs))) + "-----END PKCS7-----\n")
		}
	}
	if body == nil {
		body = base64Lines(CertsOnly(certs))
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Transfer-Encoding", "base64")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// decodeESTBody decodes a base64 DER body (any whitespace, optional PEM armour is not
// accepted: RFC 7030 says base64 DER) into a CSR with a valid self-signature.
func decodeESTBody(body []byte) (*x509.CertificateRequest, error) {
	clean := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, string(body))
	der, err := base64.StdEncoding.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("body is not base64: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("body is not a PKCS#10 CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	return csr, nil
}

func csrWantsClientAuth(csr *x509.CertificateRequest) bool {
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(oidExtKeyUsage) {
			continue
		}
		var oids []asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(ext.Value, &oids); err != nil {
			return false
		}
		for _, o := range oids {
			if o.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}) {
				return true
			}
		}
	}
	return false
}

func (e *Emulator) estEnroll(w http.ResponseWriter, r *http.Request, rc *reqCtx, l *estLabel, reenroll bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !strings.EqualFold(mt, "application/pkcs10") {
		estFail(w, rc, http.StatusUnsupportedMediaType, "Content-Type must be application/pkcs10")
		return
	}
	csr, err := decodeESTBody(rc.body)
	if err != nil {
		estFail(w, rc, http.StatusBadRequest, err.Error())
		return
	}
	client, ok := e.estAuthenticate(r, rc, l, csr, reenroll)
	if !ok {
		estFail(w, rc, http.StatusUnauthorized, rc.entry.Auth.Verdict)
		return
	}
	if reenroll {
		if client == nil {
			estFail(w, rc, http.StatusUnauthorized, "simplereenroll needs a client certificate issued by this EST CA")
			return
		}
		if client.Subject.String() != csr.Subject.String() || !sameSANs(client, csr) {
			estFail(w, rc, http.StatusBadRequest, "CSR subject/SAN differ from the client certificate")
			return
		}
	}
	e.mu.Lock()
	revoked := e.estRevoked[csr.Subject.CommonName]
	validity := l.validity
	e.mu.Unlock()
	if revoked {
		estFail(w, rc, http.StatusUnauthorized, "subject revoked")
		return
	}
	tmpl := &x509.Certificate{
		Subject: csr.Subject, DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses,
		EmailAddresses: csr.EmailAddresses, URIs: csr.URIs,
		KeyUsage: keyUsageFor(csr.PublicKey), BasicConstraintsValid: true,
	}
	eku := false
	for _, ext := range csr.Extensions {
		if ext.Id.Equal(oidExtKeyUsage) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
			eku = true
		}
	}
	if !eku {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	now := e.clk.Now()
	leaf, err := l.ca.Issue(tmpl, csr.PublicKey, now.Add(-time.Minute), now.Add(validity))
	if err != nil {
		estFail(w, rc, http.StatusInternalServerError, err.Error())
		return
	}
	rc.setVerdict(rc.entry.Auth.Verdict + fmt.Sprintf("; issued CN=%s key=%s", csr.Subject.CommonName, csr.PublicKeyAlgorithm))
	e.estRespond(w, rc, []*x509.Certificate{leaf}, append([]*x509.Certificate{leaf, l.ca.Cert}, l.ca.Chain...))
}

func sameSANs(c *x509.Certificate, csr *x509.CertificateRequest) bool {
	return fmt.Sprint(c.DNSNames, c.IPAddresses, c.EmailAddresses, c.URIs) ==
		fmt.Sprint(csr.DNSNames, csr.IPAddresses, csr.EmailAddresses, csr.URIs)
}

// estAuthenticate applies the label's policy. It returns the client certificate when one
// issued by the label's EST CA authenticated the request (simplereenroll needs it).
func (e *Emulator) estAuthenticate(r *http.Request, rc *reqCtx, l *estLabel, csr *x509.CertificateRequest, reenroll bool) (*x509.Certificate, bool) {
	if rc.entry.Auth == nil {
		rc.entry.Auth = &AuthInfo{}
	}
	basicOK := false
	if u, p, ok := r.BasicAuth(); ok {
		want, known := l.cfg.Users[u]
		basicOK = known && want == p
	}
	var identity *x509.Certificate
	certOK, certWhy := false, "no client certificate"
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		leaf := r.TLS.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range r.TLS.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		e.mu.Lock()
		revoked := e.estRevoked[leaf.Subject.CommonName]
		boot := e.pki.BootstrapCA
		refuseBoot := e.estRefuseBoot
		e.mu.Unlock()
		verify := func(anchor *x509.Certificate) bool {
			roots := x509.NewCertPool()
			roots.AddCert(anchor)
			_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: e.clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err == nil && !e.clk.ExpireNow()
		}
		thumb, _ := Thumbprints(leaf)
		switch {
		case revoked:
			certWhy = "client certificate subject revoked"
		case verify(l.ca.Cert):
			certOK, certWhy, identity = true, "EST identity "+leaf.Subject.String(), leaf
		case verify(boot.Cert):
			certWhy = "bootstrap " + leaf.Subject.String()
			e.mu.Lock()
			used := e.estUsed[thumb]
			e.mu.Unlock()
			switch {
			case reenroll:
				certWhy += " cannot re-enroll"
			case refuseBoot && used:
				certWhy += " refused after first use"
			case csr != nil && !l.cfg.BootstrapAnyEnrollment && !csrWantsClientAuth(csr):
				certWhy += " may only enroll EST identities"
			default:
				certOK = true
				if csr != nil {
					e.mu.Lock()
					e.estUsed[thumb] = true
					e.mu.Unlock()
				}
			}
		default:
			certWhy = "client certificate from an unknown CA"
		}
	}
	var ok bool
	switch l.cfg.Policy {
	case "none":
		ok = true
	case "basic":
		ok = basicOK
	case "cert":
		ok = certOK
	case "basic_and_cert":
		ok = basicOK && certOK
	default:
		ok = basicOK || certOK
	}
	if reenroll {
		ok = certOK && identity != nil && (l.cfg.Policy != "basic_and_cert" || basicOK)
	}
	rc.entry.Auth.Verdict = fmt.Sprintf("policy=%s basic=%t cert=%s ok=%t", l.cfg.Policy, basicOK, certWhy, ok)
	return identity, ok
}

// IssueBootstrapCert issues an EST bootstrap client certificate from the bootstrap CA.
func (e *Emulator) IssueBootstrapCert(cn string, validity time.Duration) (*x509.Certificate, []byte, error) {
	c, k, err := e.pki.BootstrapCA.IssueLeaf(cn, validity, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	kp, err := KeyPEM(k)
	return c, kp, err
}
