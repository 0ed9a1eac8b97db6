package broker

import (
	"sync"
)

// throttle counts concurrent connections per peer UID (api-keys.md §1.2). Unlike
// upstream, a connection that sits idle between keep-alive requests does not starve its
// own user: when the user is at the limit, its longest-idle connection is closed to make
// room before a new one is refused (docs/RATIONALE.md).
type throttle struct {
	mu     sync.Mutex
	max    int
	active map[uint32]map[*conn]struct{}
	// ticks orders idle spells (a counter, not the clock: it runs twice per request).
	ticks uint64
}

func newThrottle(max int) *throttle {
	return &throttle{max: max, active: map[uint32]map[*conn]struct{}{}}
}

func (t *throttle) setMax(max int) {
	t.mu.Lock()
	t.max = max
	t.mu.Unlock()
}

// acquire takes a slot for c. When the user is at the limit, it takes the slot of the
// user's longest-idle connection, which the caller must close (evicted); ok false means
// c must be dropped unanswered.
func (t *throttle) acquire(c *conn) (evicted *conn, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	set := t.active[c.uid]
	if len(set) >= t.max {
		for o := range set {
			if o.idleSince == 0 {
				continue
			}
			if evicted == nil || o.idleSince < evicted.idleSince {
				evicted = o
			}
		}
		if evicted == nil {
			return nil, false
		}
		// The victim leaves the count now; it can no longer turn active (setIdle
		// ignores connections not counted), so its slot is free for c.
		delete(set, evicted)
	}
	if set == nil {
		set = map[*conn]struct{}{}
		t.active[c.uid] = set
	}
	set[c] = struct{}{}
	return evicted, true
}

// setIdle records whether c waits between requests; it reports false when c was evicted
// and must not serve another request.
func (t *throttle) setIdle(c *conn, idle bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.active[c.uid][c]; !ok {
		return false
	}
	if idle {
		t.ticks++
		c.idleSince = t.ticks
	} else {
		c.idleSince = 0
	}
	return true
}

func (t *throttle) release(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	set := t.active[c.uid]
	delete(set, c)
	if len(set) == 0 {
		delete(t.active, c.uid)
	}
}
