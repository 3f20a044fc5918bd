// Package ratelog limits how often a log line is written for an event an
// attacker can repeat at will (a refused connection, a forged uevent), so
// that the log stays readable and cheap while every occurrence is still
// counted.
package ratelog

import (
	"sync"
	"time"
)

// DefaultInterval is the interval of a zero Limiter.
const DefaultInterval = time.Second

// Limiter allows one event per Interval. The zero Limiter is ready to use.
type Limiter struct {
	Interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Allow reports whether this event may be logged, and how many were
// suppressed since the last one that was (to be logged with it).
func (l *Limiter) Allow() (suppressed int, ok bool) {
	iv := l.Interval
	if iv <= 0 {
		iv = DefaultInterval
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < iv {
		l.suppressed++
		return 0, false
	}
	l.last = now
	n := l.suppressed
	l.suppressed = 0
	return n, true
}
