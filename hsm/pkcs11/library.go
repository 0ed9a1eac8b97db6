package pkcs11

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/iotbroker/aziot/hsm/pkcs11/p11uri"
)

// Options tune a library; the first Backend opened for a path sets them.
type Options struct {
	// MaxSessions bounds the sessions kept open per token (default 16). Requests beyond
	// it wait for a free session.
	MaxSessions int
	// OneShot runs one operation at a time per token on a session opened, logged in
	// and closed for it. tpm2-pkcs11 keeps every key it used loaded in the TPM until the
	// last session closes, and a TPM holds about three: without a resource manager
	// (/dev/tpmrm0 or tpm2-abrmd), as on a bare swtpm, only this works. Slow: one
	// login per operation.
	OneShot bool
	// Wait is the longest a request waits for a free session (default 30 s).
	Wait time.Duration
	// RetryDelay is the least time between two attempts to load or reset a failing
	// library (default 1 s), so that a broken token is not hammered by every request.
	RetryDelay time.Duration
	// PINRetryDelay is how long a PIN the token rejected is not tried again (default
	// 10 s): real tokens lock after a few wrong PINs.
	PINRetryDelay time.Duration
	Log           *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxSessions <= 0 {
		o.MaxSessions = 16
	}
	if o.OneShot {
		o.MaxSessions = 1
	}
	if o.Wait <= 0 {
		o.Wait = 30 * time.Second
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	if o.PINRetryDelay <= 0 {
		o.PINRetryDelay = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// library is one loaded PKCS#11 module. Cryptoki state is per process (one
// C_Initialize, login shared by all sessions of a token), so every Backend over the
// same path shares one library value.
type library struct {
	path string
	opts Options

	// mu is held shared by every operation and exclusively to load or reset the
	// module, so that C_Finalize never runs under an operation in flight.
	mu     sync.RWMutex
	ctx    *pkcs11.Ctx
	gen    uint64    // bumped on every load, so racing recoveries reset only once
	err    error     // why the last load failed
	loaded time.Time // when the module was last loaded or failed to load

	tokMu  sync.Mutex
	tokens map[string]*token
}

var registry = struct {
	sync.Mutex
	libs map[string]*library
}{libs: map[string]*library{}}

func openLibrary(path string, opts Options) *library {
	registry.Lock()
	defer registry.Unlock()
	if l, ok := registry.libs[path]; ok {
		return l
	}
	l := &library{path: path, opts: opts.withDefaults(), tokens: map[string]*token{}}
	registry.libs[path] = l
	return l
}

// load (re)loads the module; l.mu must be held exclusively.
func (l *library) load() {
	l.gen++
	l.loaded = time.Now()
	l.err = nil
	if _, err := os.Stat(l.path); err != nil {
		l.err = fmt.Errorf("PKCS#11 library %s: %w", l.path, err)
		return
	}
	ctx := pkcs11.New(l.path)
	if ctx == nil {
		l.err = fmt.Errorf("PKCS#11 library %s could not be loaded (dlopen failed or C_GetFunctionList missing)", l.path)
		return
	}
	if err := ctx.Initialize(); err != nil && rv(err) != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
		ctx.Destroy()
		l.err = fmt.Errorf("initialize PKCS#11 library %s: %w", l.path, err)
		return
	}
	l.ctx = ctx
}

// unload finalizes the module and forgets every token; l.mu must be held exclusively.
func (l *library) unload() {
	l.tokMu.Lock()
	for _, t := range l.tokens {
		t.dead.Store(true)
	}
	l.tokens = map[string]*token{}
	l.tokMu.Unlock()
	if l.ctx != nil {
		l.ctx.Finalize()
		l.ctx.Destroy()
		l.ctx = nil
	}
}

// ensure loads the module if it is not loaded and the last failure is old enough.
func (l *library) ensure() {
	l.mu.RLock()
	ok := l.ctx != nil
	l.mu.RUnlock()
	if ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx == nil && (l.loaded.IsZero() || time.Since(l.loaded) >= l.opts.RetryDelay) {
		l.load()
	}
}

// reset finalizes and reloads the module after a failure seen at generation gen,
// unless another request already did or the last reset is too recent.
func (l *library) reset(gen uint64, why error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen != gen || time.Since(l.loaded) < l.opts.RetryDelay {
		return
	}
	l.opts.Log.Warn("reloading PKCS#11 library", "lib", l.path, "reason", why.Error())
	l.unload()
	l.load()
}

// token returns the pool of the token u names, finding its slot; l.mu is held shared.
func (l *library) token(u *p11uri.URI) (*token, error) {
	key := u.TokenKey()
	l.tokMu.Lock()
	t, ok := l.tokens[key]
	l.tokMu.Unlock()
	if ok && !t.dead.Load() {
		return t, nil
	}
	slot, info, err := l.findSlot(u)
	if err != nil {
		return nil, err
	}
	l.tokMu.Lock()
	defer l.tokMu.Unlock()
	if t, ok := l.tokens[key]; ok && !t.dead.Load() {
		return t, nil
	}
	t = newToken(l.ctx, slot, info, l.opts)
	l.tokens[key] = t
	return t, nil
}

func (l *library) findSlot(u *p11uri.URI) (uint, pkcs11.TokenInfo, error) {
	slots, err := l.ctx.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("list slots: %w", err)
	}
	for _, s := range slots {
		if u.HasSlotID && s != u.SlotID {
			continue
		}
		info, err := l.ctx.GetTokenInfo(s)
		if err != nil {
			continue // a slot whose token just went away
		}
		if u.HasSlotID || label(info) == u.Token {
			return s, info, nil
		}
	}
	return 0, pkcs11.TokenInfo{}, errTokenNotFound
}

func label(info pkcs11.TokenInfo) string { return strings.TrimRight(info.Label, " \x00") }

// dropToken forgets t after it failed, closing its idle sessions; l.mu is held shared.
func (l *library) dropToken(t *token) {
	if t.ctx != l.ctx {
		// The library was reloaded since: C_Finalize closed t's sessions, and its
		// context must not be called any more.
		return
	}
	l.tokMu.Lock()
	for k, v := range l.tokens {
		if v == t {
			delete(l.tokens, k)
		}
	}
	l.tokMu.Unlock()
	t.kill()
}

// with runs fn on a session of the token u names. A lost session, token or library is
// recovered from: the failed state is dropped and fn runs again, at most three times (a stale
// handle reveals a re-initialised token, which then needs the library reloaded).
func (l *library) with(u *p11uri.URI, fn func(*conn) error) error {
	var err error
	for attempt := 0; attempt < 4; attempt++ { // first try, then session, token, library
		var gen uint64
		var t *token
		gen, t, err = l.try(u, fn)
		if err == nil {
			return nil
		}
		f := classify(err)
		if f == failOp && t != nil && !l.alive(t) {
			// "Not found" from a token that was deleted or re-initialised under us is
			// not an answer: find the token again.
			f = failToken
		}
		switch f {
		case failOp:
			return err
		case failSession:
			// release closed the session; the retry opens or takes another, and finds
			// its objects again (a cached handle may be what failed).
			if t != nil {
				t.clearHandles()
			}
		case failToken:
			if t != nil {
				l.mu.RLock()
				l.dropToken(t)
				l.mu.RUnlock()
			}
		case failLibrary:
			l.reset(gen, err)
		}
	}
	return err
}

func (l *library) try(u *p11uri.URI, fn func(*conn) error) (uint64, *token, error) {
	l.ensure()
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.ctx == nil {
		err := l.err
		if err == nil {
			err = errors.New("PKCS#11 library not loaded")
		}
		return l.gen, nil, err
	}
	t, err := l.token(u)
	if err != nil {
		return l.gen, nil, err
	}
	s, err := t.acquire(u)
	if err != nil {
		return l.gen, t, err
	}
	err = fn(&conn{ctx: l.ctx, s: s, t: t})
	t.release(s, err)
	return l.gen, t, err
}

// alive reports whether t's slot still holds the token the pool was made for.
func (l *library) alive(t *token) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.ctx == nil || t.dead.Load() {
		return false
	}
	info, err := l.ctx.GetTokenInfo(t.slot)
	return err == nil && label(info) == t.label && info.SerialNumber == t.serial
}

// Stats is a token's session accounting, for leak checks.
type Stats struct {
	Open, Idle, Max int
	// Opened and Closed count C_OpenSession and C_CloseSession calls over the pool's life.
	Opened, Closed int64
	// TokenSessions is the token's own count (C_GetTokenInfo), or -1 when unavailable.
	TokenSessions int
}

func (l *library) stats(u *p11uri.URI) (Stats, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.ctx == nil {
		return Stats{}, errors.New("PKCS#11 library not loaded")
	}
	l.tokMu.Lock()
	t := l.tokens[u.TokenKey()]
	l.tokMu.Unlock()
	if t == nil {
		return Stats{}, errors.New("no pool for this token")
	}
	st := t.stats()
	st.TokenSessions = -1
	if info, err := l.ctx.GetTokenInfo(t.slot); err == nil && info.SessionCount != pkcs11.CK_UNAVAILABLE_INFORMATION {
		st.TokenSessions = int(info.SessionCount)
	}
	return st, nil
}
