package pkcs11

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/iotbroker/aziot/hsm/pkcs11/p11uri"
)

// token is the session pool of one token. A PKCS#11 session must not be used by two
// threads at once, so each request takes a session from the pool for its whole
// operation; login state is per token, so one login serves every session.
type token struct {
	ctx           *pkcs11.Ctx
	slot          uint
	label, serial string // to notice a token re-initialised under the pool
	opts          Options

	idle  chan pkcs11.SessionHandle // sessions ready for use
	slots chan struct{}             // one element per open session: bounds the pool

	opened, closed atomic.Int64
	dead           atomic.Bool // dropped after a failure: close sessions, do not reuse

	// handles caches object handles by class and label: PKCS#11 handles are valid in
	// every session, and a search costs as much as the signature (SoftHSM). A handle
	// made stale by another process fails its operation with
	// CKR_OBJECT_HANDLE_INVALID, which clears the cache and retries.
	handles sync.Map // objectKey → pkcs11.ObjectHandle

	mu       sync.Mutex // serializes logins
	loggedIn bool
	badPIN   [32]byte // SHA-256 of the last PIN the token refused
	badErr   error
	badAt    time.Time
}

func newToken(ctx *pkcs11.Ctx, slot uint, info pkcs11.TokenInfo, opts Options) *token {
	return &token{
		ctx:    ctx,
		slot:   slot,
		label:  label(info),
		serial: info.SerialNumber,
		opts:   opts,
		idle:   make(chan pkcs11.SessionHandle, opts.MaxSessions),
		slots:  make(chan struct{}, opts.MaxSessions),
	}
}

// acquire takes an idle session or opens one, waiting while the pool is full, and logs
// in when u carries a PIN and the token is not logged in yet.
func (t *token) acquire(u *p11uri.URI) (pkcs11.SessionHandle, error) {
	var s pkcs11.SessionHandle
	select {
	case s = <-t.idle:
	default:
		timer := time.NewTimer(t.opts.Wait)
		defer timer.Stop()
		select {
		case s = <-t.idle:
		case t.slots <- struct{}{}:
			var err error
			// Read-write: creating and destroying token objects needs it.
			s, err = t.ctx.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
			if err != nil {
				<-t.slots
				return 0, fmt.Errorf("open session: %w", err)
			}
			t.opened.Add(1)
		case <-timer.C:
			return 0, fmt.Errorf("no free session after %s (%d in use)", t.opts.Wait, t.opts.MaxSessions)
		}
	}
	if u.HasPIN {
		if err := t.login(s, u.PIN); err != nil {
			t.release(s, err)
			return 0, err
		}
	}
	return s, nil
}

func (t *token) login(s pkcs11.SessionHandle, pin string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.loggedIn {
		return nil
	}
	sum := sha256.Sum256([]byte(pin))
	if t.badErr != nil && sum == t.badPIN && time.Since(t.badAt) < t.opts.PINRetryDelay {
		return t.badErr
	}
	err := t.ctx.Login(s, pkcs11.CKU_USER, pin)
	switch {
	case err == nil, rv(err) == pkcs11.CKR_USER_ALREADY_LOGGED_IN:
		t.loggedIn = true
		t.badErr = nil
		return nil
	case isPINError(err):
		// The error names the return value only, never the PIN.
		t.badPIN, t.badAt = sum, time.Now()
		t.badErr = fmt.Errorf("log in to the token: %w (not retried for %s)", err, t.opts.PINRetryDelay)
		return t.badErr
	}
	return fmt.Errorf("log in to the token: %w", err)
}

// release returns s to the pool, or closes it when the operation showed the session or
// token is no longer good.
func (t *token) release(s pkcs11.SessionHandle, err error) {
	if err != nil && classify(err) != failOp || t.dead.Load() || t.opts.OneShot {
		t.close(s)
		return
	}
	t.idle <- s // never blocks: idle has room for every open session
}

func (t *token) close(s pkcs11.SessionHandle) {
	t.ctx.CloseSession(s)
	t.closed.Add(1)
	<-t.slots
	if len(t.slots) == 0 {
		// The last session closed logs the application out (PKCS#11 §5.6).
		t.mu.Lock()
		t.loggedIn = false
		t.mu.Unlock()
	}
}

// kill marks t dead and closes its idle sessions; sessions in use close on release.
func (t *token) kill() {
	t.dead.Store(true)
	for {
		select {
		case s := <-t.idle:
			t.close(s)
		default:
			return
		}
	}
}

func (t *token) stats() Stats {
	return Stats{
		Open:   len(t.slots),
		Idle:   len(t.idle),
		Max:    cap(t.slots),
		Opened: t.opened.Load(),
		Closed: t.closed.Load(),
	}
}

type objectKey struct {
	class uint
	label string
}

// cacheable: tpm2-pkcs11 without resource manager logs out after every operation, and
// its handles are not promised to survive that.
func (t *token) cacheable() bool { return !t.opts.OneShot }

func (t *token) forget(class uint, label string) { t.handles.Delete(objectKey{class, label}) }

func (t *token) clearHandles() { t.handles.Clear() }

var errNoLabel = errors.New("PKCS#11 keys without an object label cannot be deleted or moved")
