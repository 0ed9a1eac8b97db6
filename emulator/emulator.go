// Package emulator is a strict local emulator of the Azure IoT Hub Device Provisioning
// Service (device API), IoT Hub (identity registry and telemetry) and an RFC 7030 EST
// server, for tests that cannot reach Azure. Contracts: shared/spec/emulator.md,
// cloud-dps.md, cloud-hub.md, cloud-est.md. It deliberately imports nothing from the
// project's client code so that one misreading of a contract cannot hide in both ends.
package emulator

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Emulator is a running (or configured) set of DPS, hub, EST and admin listeners.
type Emulator struct {
	cfg Config
	clk *clock
	pki *PKI

	mu            sync.Mutex
	rng           *mrand.Rand
	opCounter     int
	scopes        map[string]string // lower-case → configured spelling
	enrollments   map[string]*Enrollment
	registrations map[string]*Registration
	operations    map[string]*operation
	tpmChallenges map[string]*tpmChallenge
	hubs          []*hubState
	hubByName     map[string]*hubState // lower-case name or alias
	est           map[string]*estLabel
	reassign      map[string]string // lower registration ID → hub for the next registration
	estUsed       map[string]bool   // bootstrap certificate thumbprints already used
	estRevoked    map[string]bool   // revoked subjects (cert_rotation knob)
	estRefuseBoot bool              // bootstrap cert refused after its first use
	pendingHubs   map[string]map[string]persistedDevice

	faults *faultSet
	log    *requestLog

	servers []*http.Server
	tlsSet  []*serverTLS
	wg      sync.WaitGroup

	dpsURL, estURL, adminURL string
	estPlainURL              string
	rootPath                 string
	tmpDir                   string
}

// New prepares an emulator (PKI, state) without listening.
func New(cfg Config) (*Emulator, error) {
	cfg.withDefaults()
	seed := cfg.Seed
	if seed == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("seed: %w", err)
		}
		seed = binary.LittleEndian.Uint64(b[:])
	}
	p, err := loadOrCreatePKI(cfg.PKIDir)
	if err != nil {
		return nil, fmt.Errorf("test PKI: %w", err)
	}
	e := &Emulator{
		cfg:    cfg,
		clk:    &clock{base: cfg.Clock},
		pki:    p,
		rng:    mrand.New(mrand.NewPCG(seed, seed>>1|1)),
		faults: &faultSet{},
		log:    &requestLog{bodyCap: cfg.LogBodyCap},
	}
	e.resetStateLocked()
	for _, lc := range cfg.ESTLabels {
		if err := e.addESTLabel(lc); err != nil {
			return nil, err
		}
	}
	// Persisted state first: adding the configured enrollments writes the state file,
	// which must already hold what was persisted.
	if cfg.StateDir != "" {
		if err := e.loadState(); err != nil {
			return nil, err
		}
	}
	for _, en := range cfg.Enrollments {
		if err := e.AddEnrollment(en); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Start creates an emulator and starts every listener.
func Start(cfg Config) (*Emulator, error) {
	e, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := e.Listen(); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

func (e *Emulator) resetStateLocked() {
	e.scopes = map[string]string{}
	for _, s := range e.cfg.IDScopes {
		e.scopes[strings.ToLower(s)] = s
	}
	e.enrollments = map[string]*Enrollment{}
	e.registrations = map[string]*Registration{}
	e.operations = map[string]*operation{}
	e.tpmChallenges = map[string]*tpmChallenge{}
	e.reassign = map[string]string{}
	e.estUsed = map[string]bool{}
	e.estRevoked = map[string]bool{}
	e.estRefuseBoot = false
	if e.hubByName == nil {
		e.hubByName = map[string]*hubState{}
	}
	for _, h := range e.hubs {
		h.devices = map[string]*Device{}
		h.moduleMessages = map[string]int{}
	}
}

// Listen binds every configured listener and serves in the background.
func (e *Emulator) Listen() error {
	if e.cfg.DPSAddr != "off" {
		st, err := e.listen("dps", "dps", e.cfg.DPSAddr, nil, e.dpsHandler())
		if err != nil {
			return err
		}
		e.dpsURL = st.url
	}
	for i := range e.cfg.Hubs {
		hc := e.cfg.Hubs[i]
		h := &hubState{cfg: hc, devices: map[string]*Device{}, moduleMessages: map[string]int{}}
		if h.cfg.Policies == nil {
			h.cfg.Policies = map[string]string{"iothubowner": e.randomKey()}
		}
		addr := hc.Addr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		names := append([]string{hostOnly(hc.Name)}, hostsOnly(hc.Aliases)...)
		st, err := e.listen("hub", "", addr, names, e.hubHandler(h))
		if err != nil {
			return err
		}
		h.name = hc.Name
		if h.name == "" {
			h.name = "localhost:" + portOf(st.url)
		}
		st.name, h.tls = h.name, st
		e.mu.Lock()
		e.hubs = append(e.hubs, h)
		e.hubByName[strings.ToLower(h.name)] = h
		for _, a := range hc.Aliases {
			e.hubByName[strings.ToLower(a)] = h
		}
		e.mu.Unlock()
	}
	if e.cfg.ESTAddr != "off" {
		st, err := e.listen("est", "est", e.cfg.ESTAddr, nil, e.estHandler())
		if err != nil {
			return err
		}
		e.estURL = st.url
	}
	if e.cfg.ESTPlainAddr != "" {
		ln, err := net.Listen("tcp", e.cfg.ESTPlainAddr)
		if err != nil {
			return fmt.Errorf("listen plain EST on %s: %w", e.cfg.ESTPlainAddr, err)
		}
		srv := &http.Server{Handler: e.estHandler(), ReadHeaderTimeout: 30 * time.Second, ErrorLog: quietLogger()}
		e.servers = append(e.servers, srv)
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			_ = srv.Serve(ln)
		}()
		e.estPlainURL = "http://" + ln.Addr().String()
	}
	if e.cfg.AdminAddr != "" {
		if e.cfg.AdminToken == "" {
			e.cfg.AdminToken = e.randomKey()
		}
		st, err := e.listen("admin", "admin", e.cfg.AdminAddr, nil, e.adminHandler())
		if err != nil {
			return err
		}
		e.adminURL = st.url
	}
	if e.cfg.StateDir != "" {
		// Devices loaded before the hubs existed are attached now.
		if err := e.loadHubState(); err != nil {
			return err
		}
	}
	return nil
}

func (e *Emulator) listen(kind, name, addr string, extraNames []string, h http.Handler) (*serverTLS, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s on %s: %w", kind, addr, err)
	}
	tcpAddr := ln.Addr().(*net.TCPAddr)
	st, err := e.newServerTLS(kind, tcpAddr.IP, extraNames)
	if err != nil {
		ln.Close()
		return nil, err
	}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         st.config(),
		ReadHeaderTimeout: 30 * time.Second,
		// HTTP/1.1 only: hijacking (reset knob) needs it, and every real client here
		// speaks HTTP/1.1.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     quietLogger(),
	}
	e.servers = append(e.servers, srv)
	e.tlsSet = append(e.tlsSet, st)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		_ = srv.ServeTLS(ln, "", "")
	}()
	host := "localhost"
	if !tcpAddr.IP.IsLoopback() || tcpAddr.IP.String() != "127.0.0.1" {
		host = tcpAddr.IP.String()
		if tcpAddr.IP.To4() == nil {
			host = "[" + host + "]"
		}
	}
	st.url = fmt.Sprintf("https://%s:%d", host, tcpAddr.Port)
	if tcpAddr.Port == 443 {
		st.url = "https://" + host
	}
	return st, nil
}

// Stop closes every listener and waits for the servers; persisted state is saved.
func (e *Emulator) Stop() {
	for _, s := range e.servers {
		_ = s.Close()
	}
	e.wg.Wait()
	e.servers = nil
	if e.cfg.StateDir != "" {
		_ = e.saveState()
	}
	if e.tmpDir != "" {
		_ = os.RemoveAll(e.tmpDir)
	}
}

// Reset drops all cloud state (enrollments, registrations, operations, devices), the fault
// plan, the request log and the clock knobs; configuration and listeners stay.
func (e *Emulator) Reset() {
	e.mu.Lock()
	e.resetStateLocked()
	e.mu.Unlock()
	e.faults.clear()
	e.log.clear()
	e.clk.mu.Lock()
	e.clk.offset, e.clk.expireNow = 0, false
	e.clk.mu.Unlock()
}

// DPSURL is the DPS origin, e.g. https://localhost:41234.
func (e *Emulator) DPSURL() string { return e.dpsURL }

// ESTURL is the EST origin; the EST base is ESTURL()+"/.well-known/est[/label]".
func (e *Emulator) ESTURL() string { return e.estURL }

// ESTPlainURL is the optional plain-HTTP EST origin ("" when disabled).
func (e *Emulator) ESTPlainURL() string { return e.estPlainURL }

// AdminURL is the admin listener's origin ("" when disabled).
func (e *Emulator) AdminURL() string { return e.adminURL }

// AdminToken is the bearer token of the admin listener.
func (e *Emulator) AdminToken() string { return e.cfg.AdminToken }

// HubNames lists the canonical hub names in configuration order.
func (e *Emulator) HubNames() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, h := range e.hubs {
		out = append(out, h.name)
	}
	return out
}

// HubURL returns https://<listener> of the named hub.
func (e *Emulator) HubURL(name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if h := e.hubByName[strings.ToLower(name)]; h != nil && h.tls != nil {
		return h.tls.url
	}
	return ""
}

// PKI exposes the test PKI (tests issue device certificates from it).
func (e *Emulator) PKI() *PKI { return e.pki }

// RootCAPEM returns the test root in PEM.
func (e *Emulator) RootCAPEM() []byte { return CertPEM(e.pki.Root.Cert) }

// RootCAPath writes the root to a file (once) and returns its path, for
// NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, curl --cacert and the like.
func (e *Emulator) RootCAPath() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rootPath != "" {
		return e.rootPath, nil
	}
	dir := e.cfg.PKIDir
	if dir == "" {
		d, err := os.MkdirTemp("", "aziot-emulator-")
		if err != nil {
			return "", fmt.Errorf("temp dir for root CA: %w", err)
		}
		e.tmpDir, dir = d, d
	}
	p := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(p, e.RootCAPEM(), 0o644); err != nil {
		return "", fmt.Errorf("write root CA: %w", err)
	}
	e.rootPath = p
	return p, nil
}

// Log returns a copy of the request log.
func (e *Emulator) Log() []LogEntry { return e.log.snapshot() }

// ClearLog empties the request log.
func (e *Emulator) ClearLog() { e.log.clear() }

// AddFault installs a fault (emulator.md §5).
func (e *Emulator) AddFault(f Fault) { e.faults.add(f) }

// ClearFaults removes every installed fault.
func (e *Emulator) ClearFaults() { e.faults.clear() }

// SetClockOffset shifts the emulator's clock (clock_offset knob).
func (e *Emulator) SetClockOffset(d time.Duration) {
	e.clk.mu.Lock()
	defer e.clk.mu.Unlock()
	e.clk.offset = d
}

// SetExpireNow makes every token and certificate count as expired (expire_now knob).
func (e *Emulator) SetExpireNow(on bool) {
	e.clk.mu.Lock()
	defer e.clk.mu.Unlock()
	e.clk.expireNow = on
}

// Now is the emulator's current time (base clock + offset).
func (e *Emulator) Now() time.Time { return e.clk.Now() }

func hostOnly(s string) string {
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}

func hostsOnly(l []string) []string {
	var out []string
	for _, s := range l {
		out = append(out, hostOnly(s))
	}
	return out
}

func portOf(u string) string {
	i := strings.LastIndex(u, ":")
	return u[i+1:]
}
