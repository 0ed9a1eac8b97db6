package emulator

import (
	"sync"
	"time"
)

// clock is the emulator's notion of "now": an injectable base clock plus an offset knob
// (clock_offset) and an expire_now switch that makes every token and certificate count
// as expired.
type clock struct {
	mu        sync.Mutex
	base      func() time.Time
	offset    time.Duration
	expireNow bool
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.base
	if b == nil {
		b = time.Now
	}
	return b().Add(c.offset)
}

// ExpireNow reports whether the expire_now knob is on.
func (c *clock) ExpireNow() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expireNow
}

// tokenExpired applies expiry plus the expire_now knob.
func (c *clock) tokenExpired(t *SASToken) bool {
	return c.ExpireNow() || t.Expired(c.Now())
}

// certValid applies a certificate's validity window plus the expire_now knob.
func (c *clock) certValid(nb, na time.Time) bool {
	if c.ExpireNow() {
		return false
	}
	now := c.Now()
	return !now.Before(nb) && !now.After(na)
}
