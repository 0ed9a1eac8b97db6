package emulator

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"
)

// serverTLS holds one listener's certificates: the normal leaf and, created on demand,
// the variants served by the tls_fail knob.
type serverTLS struct {
	e        *Emulator
	kind     string
	name     string
	url      string
	normal   tls.Certificate
	mu       sync.Mutex
	variants map[string]*tls.Certificate
	dns      []string
	ips      []net.IP
}

func (e *Emulator) newServerTLS(kind string, ip net.IP, extraNames []string) (*serverTLS, error) {
	dns := []string{"localhost"}
	for _, n := range append(append([]string{}, e.cfg.DNSNames...), extraNames...) {
		if n == "" {
			continue
		}
		if parsed := net.ParseIP(n); parsed != nil {
			continue // IP-named hubs are covered by the IP SANs below
		}
		dns = append(dns, n)
	}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	ips = append(ips, e.cfg.IPAddresses...)
	if ip != nil && !ip.IsUnspecified() {
		ips = append(ips, ip)
	}
	for _, n := range extraNames {
		if parsed := net.ParseIP(n); parsed != nil {
			ips = append(ips, parsed)
		}
	}
	st := &serverTLS{e: e, kind: kind, name: kind, variants: map[string]*tls.Certificate{}, dns: dns, ips: ips}
	c, err := st.issue(e.pki.Root, dns, ips, time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0))
	if err != nil {
		return nil, fmt.Errorf("%s server certificate: %w", kind, err)
	}
	st.normal = *c
	return st, nil
}

func (st *serverTLS) issue(ca *CA, dns []string, ips []net.IP, nb, na time.Time) (*tls.Certificate, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Issue(&x509.Certificate{
		Subject:     pkixName("aziot emulator " + st.kind),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dns,
		IPAddresses: ips,
	}, key.Public(), nb, na)
	if err != nil {
		return nil, err
	}
	chain := [][]byte{leaf.Raw}
	for _, c := range ca.Chain {
		chain = append(chain, c.Raw)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

func (st *serverTLS) variant(mode string) (*tls.Certificate, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if c, ok := st.variants[mode]; ok {
		return c, nil
	}
	var c *tls.Certificate
	var err error
	switch mode {
	case TLSUntrusted:
		c, err = st.issue(st.e.pki.Untrusted, st.dns, st.ips, time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0))
	case TLSWrongHost:
		c, err = st.issue(st.e.pki.Root, []string{"wrong-host.invalid"}, nil, time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0))
	case TLSExpired:
		c, err = st.issue(st.e.pki.Root, st.dns, st.ips, time.Now().AddDate(-1, 0, 0), time.Now().Add(-time.Hour))
	default:
		return nil, fmt.Errorf("unknown tls_fail mode %q", mode)
	}
	if err != nil {
		return nil, err
	}
	st.variants[mode] = c
	return c, nil
}

func (st *serverTLS) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Requested, never required: X.509 failures must surface as HTTP 401, and Basic or
		// SAS clients must still connect (cloud-dps.md §8, cloud-hub.md §4.2, cloud-est.md §5).
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			f := st.e.faults.pick(target{endpoint: st.kind, name: st.name}, FaultTLSFail)[FaultTLSFail]
			if f == nil {
				return &st.normal, nil
			}
			return st.variant(f.TLSMode)
		},
	}
}

// quietLogger drops the http.Server's own log lines (handshake errors from clients that
// reject a tls_fail certificate are expected in tests).
func quietLogger() *log.Logger { return log.New(io.Discard, "", 0) }
