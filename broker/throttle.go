package broker

import "sync"

// throttle counts concurrent connections per peer UID (api-keys.md §1.2).
type throttle struct {
	mu     sync.Mutex
	max    int
	active map[uint32]int
}

func newThrottle(max int) *throttle {
	return &throttle{max: max, active: map[uint32]int{}}
}

func (t *throttle) setMax(max int) {
	t.mu.Lock()
	t.max = max
	t.mu.Unlock()
}

// acquire takes a slot for uid; false means the connection must be dropped unanswered.
func (t *throttle) acquire(uid uint32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.active[uid] >= t.max {
		return false
	}
	t.active[uid]++
	return true
}

func (t *throttle) release(uid uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.active[uid] <= 1 {
		delete(t.active, uid)
		return
	}
	t.active[uid]--
}
