package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/sdk/certs"
	"github.com/iotbroker/aziot/sdk/keys"
)

// What a persisted file may hold.
type crashKind int

const (
	crashImportKey  crashKind = iota // imported symmetric key: one of two known versions
	crashGenKey                      // generated symmetric key: 32 bytes, never changes
	crashGenPair                     // generated key pair: PEM private key, never changes
	crashImportCert                  // imported cert: one of two known versions
	crashIssuedCert                  // issued cert: leaf signed by the CA, then the CA
	crashFixed                       // written before the kill loop, never rewritten
)

// crashID is what the test knows of one key or cert ID.
type crashID struct {
	id   string
	kind crashKind
	// possible holds the contents the file may have ("" = absent): the last acknowledged
	// write and every write attempted since.
	possible map[string]bool
	// acked: a write was acknowledged, so the file must exist.
	acked bool
	// seen is the first content observed of a generated file; it must never change.
	seen []byte
}

type crashBook struct {
	mu    sync.Mutex
	keys  map[string]*crashID // file name under lib/keyd/keys → ID
	certs map[string]*crashID // file name under lib/certd/certs → ID
}

func (b *crashBook) add(table map[string]*crashID, name, id string, kind crashKind) *crashID {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := table[name]
	if e == nil {
		e = &crashID{id: id, kind: kind, possible: map[string]bool{"": true}}
		table[name] = e
	}
	return e
}

func (b *crashBook) attempt(e *crashID, content string) {
	b.mu.Lock()
	e.possible[content] = true
	b.mu.Unlock()
}

func (b *crashBook) ack(e *crashID, content string) {
	b.mu.Lock()
	e.acked = true
	if e.kind == crashImportKey || e.kind == crashImportCert {
		e.possible = map[string]bool{content: true}
	}
	b.mu.Unlock()
}

// crashVersions are two contents per imported ID, of different lengths, so that a torn or
// mixed write cannot pass for either.
func crashVersions(n int, pemType string) [2]string {
	var out [2]string
	for i, size := range []int{n, 2*n + 17} {
		b := make([]byte, size)
		rand.Read(b)
		if pemType == "" {
			out[i] = string(b)
		} else {
			out[i] = string(pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: b}))
		}
	}
	return out
}

// TestCrashSafety SIGKILLs aziotd again and again while clients create and import keys
// and certs, and checks after every kill that each persisted file is whole: one of the
// versions written (or, for generated content, a valid key or chain that never changes),
// that acknowledged writes survived, and at the end that every key still signs.
func TestCrashSafety(t *testing.T) {
	const (
		rounds  = 15
		workers = 4
	)
	dir := testenv.NewStateDir(t)
	// Room for the workers, certd's own keyd connections and stale ones after a kill.
	testenv.WriteConfig(t, dir, "keyd", "50-crash.toml", "max_requests = 64\n")
	testenv.WriteConfig(t, dir, "certd", "50-crash.toml", "max_requests = 64\n")
	d := testenv.StartDev(t, dir)
	keysDir := filepath.Join(dir, "lib", "keyd", "keys")
	certsDir := filepath.Join(dir, "lib", "certd", "certs")
	ctx := context.Background()

	book := &crashBook{keys: map[string]*crashID{}, certs: map[string]*crashID{}}
	// The CA for issued certs and the handle-validation key exist before the first kill.
	setupKeys := keys.New(d.Socket("keyd"))
	setupCerts := certs.New(d.Socket("certd"))
	caHandle := certdOK[string](t)(setupKeys.CreateKeyPair(ctx, "crash-ca", "ec-p256"))
	caSigner := certdOK[*keys.Signer](t)(setupKeys.Signer(ctx, caHandle))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "crash CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER := certdOK[[]byte](t)(x509.CreateCertificate(rand.Reader, tmpl, tmpl, caSigner.Public(), caSigner))
	ca := certdOK[*x509.Certificate](t)(x509.ParseCertificate(caDER))
	caPEM := certPEM(ca)
	certdOK[string](t)(setupCerts.Import(ctx, "crash-ca", caPEM))
	setupKeys.Close()
	setupCerts.Close()
	for _, id := range []string{"crash-ca", keydHandleValidationKey} {
		e := book.add(book.keys, hsm.FileName(id, ".key"), id, crashFixed)
		book.ack(e, "")
	}
	book.ack(book.add(book.certs, hsm.FileName("crash-ca", ".cer"), "crash-ca", crashFixed), "")

	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		opsMu    sync.Mutex
		ops      = map[string]int{}
		apiFails []string
		served   atomic.Int64 // operations answered with success, for the kill loop
	)
	count := func(op string, err error) {
		opsMu.Lock()
		defer opsMu.Unlock()
		var apiErr *keys.APIError
		switch {
		case err == nil:
			ops[op]++
			served.Add(1)
		case errors.As(err, &apiErr):
			// The daemon answered, and refused: never expected here.
			apiFails = append(apiFails, fmt.Sprintf("%s: %v", op, err))
		default:
			ops[op+" (no answer)"]++
		}
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kc := keys.NewWithConns(d.Socket("keyd"), 2)
			cc := certs.New(d.Socket("certd"))
			defer kc.Close()
			defer cc.Close()
			keyVersions := crashVersions(48+w, "")
			certVersions := crashVersions(1500+w, "CERTIFICATE")
			impKey := fmt.Sprintf("imp-key-%d", w)
			impCert := fmt.Sprintf("imp-cert-%d", w)
			impKeyE := book.add(book.keys, hsm.FileName(impKey, ".key"), impKey, crashImportKey)
			impCertE := book.add(book.certs, hsm.FileName(impCert, ".cer"), impCert, crashImportCert)
			leafKey := newECKey(t)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				switch n % 5 {
				case 0:
					v := keyVersions[(n/5)%2]
					book.attempt(impKeyE, v)
					if _, err = kc.ImportKey(ctx, impKey, []byte(v), "sign"); err == nil {
						book.ack(impKeyE, v)
					}
					count("import key", err)
				case 1:
					id := fmt.Sprintf("gen-key-%d-%d", w, n)
					e := book.add(book.keys, hsm.FileName(id, ".key"), id, crashGenKey)
					if _, err = kc.CreateKey(ctx, id, "sign"); err == nil {
						book.ack(e, "")
					}
					count("create key", err)
				case 2:
					id := fmt.Sprintf("gen-pair-%d-%d", w, n)
					e := book.add(book.keys, hsm.FileName(id, ".key"), id, crashGenPair)
					if _, err = kc.CreateKeyPair(ctx, id, "ec-p256"); err == nil {
						book.ack(e, "")
					}
					count("create key pair", err)
				case 3:
					v := certVersions[(n/5)%2]
					book.attempt(impCertE, v)
					if _, err = cc.Import(ctx, impCert, v); err == nil {
						book.ack(impCertE, v)
					}
					count("import cert", err)
				case 4:
					id := fmt.Sprintf("issued-%d-%d", w, n)
					e := book.add(book.certs, hsm.FileName(id, ".cer"), id, crashIssuedCert)
					csr := makeCSR(t, leafKey, pkix.Name{CommonName: id})
					if _, err = cc.Create(ctx, id, csr, &certs.IssuerRef{CertID: "crash-ca", KeyHandle: caHandle}); err == nil {
						book.ack(e, "")
					}
					count("issue cert", err)
				}
				if err != nil {
					time.Sleep(2 * time.Millisecond) // the daemon is down: do not spin
				}
			}
		}()
	}

	temps := map[string]bool{}
	check := func(when string) {
		t.Helper()
		checkCrashFiles(t, book, keysDir, book.keys, ca, when, temps)
		checkCrashFiles(t, book, certsDir, book.certs, ca, when, temps)
	}
	begin := time.Now()
	for round := 0; round < rounds; round++ {
		// A kill proves something only while the clients are writing: wait until the
		// (re)started daemon has served an operation, then pick the kill instant at
		// random so that kills fall at different points of the writes.
		if !waitServed(&served, 10*time.Second) {
			t.Errorf("round %d: no operation succeeded within 10 s of the (re)start", round+1)
			break
		}
		time.Sleep(time.Duration(50+mrand.IntN(250)) * time.Millisecond)
		d.Kill()
		check(fmt.Sprintf("after kill %d", round+1))
		if t.Failed() {
			break
		}
		d.Restart()
	}
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	// A last kill with nothing in flight, a restart, and every key must still work.
	d.Kill()
	check("after the last kill")
	d.Restart()
	verifyCrashKeys(t, d, book, keysDir, certsDir)

	opsMu.Lock()
	defer opsMu.Unlock()
	for _, f := range apiFails {
		t.Errorf("refused during the crash loop: %s", f)
	}
	for _, op := range []string{"import key", "create key", "create key pair", "import cert", "issue cert"} {
		if ops[op] == 0 {
			t.Errorf("no %q succeeded: %v", op, ops)
		}
	}
	t.Logf("%d kills in %v; operations %v; temp files left by kills: %d", rounds+1, time.Since(begin).Round(time.Millisecond), ops, len(temps))
}

// waitServed waits up to d for served to grow past its value at the call.
func waitServed(served *atomic.Int64, d time.Duration) bool {
	start := served.Load()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if served.Load() > start {
			return true
		}
	}
	return false
}

// keydHandleValidationKey is keyd's handle key ID (broker/keyd.HandleValidationKeyID).
const keydHandleValidationKey = "handle-validation-key"

// isCrashTemp reports whether name is an atomicfile temp file: ".<target>.tmp-<random>".
func isCrashTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// checkCrashFiles checks every file of dir against what was written and adds the temp
// files it sees to temps.
func checkCrashFiles(t *testing.T, book *crashBook, dir string, table map[string]*crashID, ca *x509.Certificate, when string, temps map[string]bool) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	book.mu.Lock()
	defer book.mu.Unlock()
	present := map[string]bool{}
	for _, ent := range entries {
		name := ent.Name()
		if isCrashTemp(name) {
			// A temp file may be left by a kill mid-write; its name can never be a key's
			// or a cert's (those start with the ID's alphanumerics or "-").
			if e := table[name]; e != nil {
				t.Errorf("%s: temp file %s has the name of %q", when, name, e.id)
			}
			temps[filepath.Join(dir, name)] = true
			continue
		}
		e := table[name]
		if e == nil {
			t.Errorf("%s: unexpected file %s in %s", when, name, dir)
			continue
		}
		if !ent.Type().IsRegular() {
			t.Errorf("%s: %s is not a regular file", when, name)
			continue
		}
		present[name] = true
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", when, err)
			continue
		}
		if err := crashContentOK(e, b, ca); err != nil {
			t.Errorf("%s: %s (%q): %v", when, name, e.id, err)
			continue
		}
		if e.kind == crashGenKey || e.kind == crashGenPair || e.kind == crashIssuedCert {
			if e.seen == nil {
				e.seen = b
			} else if !bytes.Equal(e.seen, b) {
				t.Errorf("%s: generated %q changed after it was written", when, e.id)
			}
		}
	}
	for name, e := range table {
		if e.acked && !present[name] {
			t.Errorf("%s: acknowledged %q is missing", when, e.id)
		}
		if !present[name] && e.seen != nil {
			t.Errorf("%s: %q vanished", when, e.id)
		}
	}
}

func crashContentOK(e *crashID, b []byte, ca *x509.Certificate) error {
	switch e.kind {
	case crashImportKey, crashImportCert:
		if !e.possible[string(b)] {
			return fmt.Errorf("%d bytes that are neither version written", len(b))
		}
	case crashGenKey:
		if len(b) != 32 {
			return fmt.Errorf("generated key of %d bytes", len(b))
		}
	case crashGenPair:
		if _, err := crashPrivateKey(b); err != nil {
			return err
		}
	case crashIssuedCert:
		chain, err := crashChain(b)
		if err != nil {
			return err
		}
		if len(chain) != 2 || !chain[1].Equal(ca) {
			return fmt.Errorf("chain of %d certs is not leaf + CA", len(chain))
		}
		if err := chain[0].CheckSignatureFrom(ca); err != nil {
			return err
		}
	case crashFixed:
		if len(b) == 0 {
			return errors.New("empty")
		}
	}
	return nil
}

func crashPrivateKey(b []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("not exactly one PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T is not a signer", k)
	}
	return s, nil
}

func crashChain(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				return nil, errors.New("trailing bytes after the chain")
			}
			return out, nil
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// verifyCrashKeys runs after the last restart: every key on disk signs through the sdk
// with the bytes on disk, every key pair signs and matches its file, every cert reads
// back as stored, and IDs whose write never landed are absent (a temp file is not a key).
func verifyCrashKeys(t *testing.T, d *testenv.Daemon, book *crashBook, keysDir, certsDir string) {
	t.Helper()
	ctx := context.Background()
	kc := keys.NewWithConns(d.Socket("keyd"), 4)
	cc := certs.New(d.Socket("certd"))
	defer kc.Close()
	defer cc.Close()
	msg := []byte("still signs after the crash")
	digest := sha256.Sum256(msg)
	names := make([]string, 0, len(book.keys))
	for name := range book.keys {
		names = append(names, name)
	}
	sort.Strings(names)
	var hmacs, ecdsas, absent int
	for _, name := range names {
		e := book.keys[name]
		if e.id == keydHandleValidationKey {
			continue
		}
		b, err := os.ReadFile(filepath.Join(keysDir, name))
		if errors.Is(err, os.ErrNotExist) {
			if e.kind == crashGenPair {
				_, err = kc.LoadKeyPair(ctx, e.id)
			} else {
				_, err = kc.LoadKey(ctx, e.id)
			}
			testenv.WantAPIError(t, err, 400, "a parameter has an invalid value")
			absent++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		switch e.kind {
		case crashImportKey, crashGenKey:
			h, err := kc.LoadKey(ctx, e.id)
			if err != nil {
				t.Errorf("load %q: %v", e.id, err)
				continue
			}
			sig, err := kc.SignHMAC(ctx, h, msg)
			mac := hmac.New(sha256.New, b)
			mac.Write(msg)
			if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
				t.Errorf("HMAC with %q: %v", e.id, err)
			}
			hmacs++
		case crashGenPair, crashFixed:
			h, err := kc.LoadKeyPair(ctx, e.id)
			if err != nil {
				t.Errorf("load %q: %v", e.id, err)
				continue
			}
			signer, err := kc.Signer(ctx, h)
			if err != nil {
				t.Errorf("signer %q: %v", e.id, err)
				continue
			}
			sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
			pub, _ := signer.Public().(*ecdsa.PublicKey)
			if err != nil || pub == nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
				t.Errorf("ECDSA with %q: %v", e.id, err)
				continue
			}
			if onDisk, err := crashPrivateKey(b); err != nil || !pub.Equal(onDisk.Public()) {
				t.Errorf("%q: keyd's public key is not the file's (%v)", e.id, err)
			}
			ecdsas++
		}
	}
	var certsRead int
	for name, e := range book.certs {
		b, err := os.ReadFile(filepath.Join(certsDir, name))
		got, gerr := cc.Get(ctx, e.id)
		if errors.Is(err, os.ErrNotExist) {
			testenv.WantAPIError(t, gerr, 400, notFoundMsg)
			continue
		}
		if err != nil || gerr != nil || got != string(b) {
			t.Errorf("cert %q: file %v, GET %v, equal %v", e.id, err, gerr, got == string(b))
		}
		certsRead++
	}
	t.Logf("after restart: %d HMAC keys and %d ECDSA key pairs sign, %d never-landed keys absent, %d certs read back", hmacs, ecdsas, absent, certsRead)
}

// TestConcurrentCreatesAgree: clients that create the same key at the same time must all
// end up with one key (create keeps an existing key), and on a fresh keyd the handles of
// the very first, concurrent requests must all stay valid (they are signed with the
// handle-validation key, created on first use).
func TestConcurrentCreatesAgree(t *testing.T) {
	dir := testenv.NewStateDir(t)
	testenv.WriteConfig(t, dir, "keyd", "50-agree.toml", "max_requests = 64\n")
	d := testenv.StartDev(t, dir)
	ctx := context.Background()
	const clients = 8
	clientsList := make([]*keys.Client, clients)
	for i := range clientsList {
		clientsList[i] = keys.NewWithConns(d.Socket("keyd"), 1)
		defer clientsList[i].Close()
	}
	// all runs f on every client at once and returns the answers.
	all := func(f func(c *keys.Client) (string, error)) []string {
		out := make([]string, clients)
		errs := make([]error, clients)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, c := range clientsList {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				out[i], errs[i] = f(c)
			}()
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	first := all(func(c *keys.Client) (string, error) { return c.CreateKey(ctx, "first", "sign") })
	for round := 0; round < 10; round++ {
		id := fmt.Sprintf("agree-key-%d", round)
		sigs := all(func(c *keys.Client) (string, error) {
			h, err := c.CreateKey(ctx, id, "sign")
			if err != nil {
				return "", err
			}
			s, err := c.SignHMAC(ctx, h, []byte("m"))
			return string(s), err
		})
		pair := fmt.Sprintf("agree-pair-%d", round)
		points := all(func(c *keys.Client) (string, error) {
			h, err := c.CreateKeyPair(ctx, pair, "ec-p256")
			if err != nil {
				return "", err
			}
			return c.Parameter(ctx, h, "ec-point")
		})
		for i := 1; i < clients; i++ {
			if sigs[i] != sigs[0] {
				t.Fatalf("round %d: concurrent creates of %q gave different keys", round, id)
			}
			if points[i] != points[0] {
				t.Fatalf("round %d: concurrent creates of %q gave different key pairs", round, pair)
			}
		}
	}
	for i, h := range first {
		if _, err := clientsList[0].SignHMAC(ctx, h, []byte("m")); err != nil {
			t.Errorf("handle %d of the first concurrent requests: %v", i, err)
		}
	}
}
