package broker

import (
	"sync"
	"time"
)

// Lines an unprivileged caller can cause (a denial, a dropped connection) are limited,
// so that a flood of them cannot flood the journal: logBurst lines per logWindow, and
// the next line allowed after a quiet spell says how many were suppressed.
const (
	logBurst  = 20
	logWindow = 10 * time.Second
)

type logLimiter struct {
	mu         sync.Mutex
	burst      int
	window     time.Duration
	start      time.Time
	n          int
	suppressed int
	now        func() time.Time
}

func newLogLimiter(burst int, window time.Duration) *logLimiter {
	return &logLimiter{burst: burst, window: window, now: time.Now}
}

// allow reports whether a line may be written now, and how many were suppressed since
// the last line written.
func (l *logLimiter) allow() (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.start) >= l.window {
		l.start, l.n = now, 0
	}
	if l.n >= l.burst {
		l.suppressed++
		return 0, false
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return suppressed, true
}
