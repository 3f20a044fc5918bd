package host

import "time"

// A driver process is not trusted to be polite: what it sends at will —
// notifications, which the daemon fans out to every client, and log
// lines, which land in the system journal — is paced per instance.
const (
	// notifyRate notifications a second, in bursts of notifyBurst: past it
	// the daemon reads the driver's socket more slowly, so a flood backs
	// up in the driver process alone and no notification is lost.
	notifyRate, notifyBurst = 10000, 1000
	// logRate lines a second, in bursts of logBurst: past it lines are
	// dropped and counted, and the next line logged says how many.
	logRate, logBurst = 50, 200
)

// bucket is a token bucket: rate tokens a second, up to burst.
type bucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func (b *bucket) refill(now time.Time) {
	if b.last.IsZero() {
		b.tokens = b.burst
	} else {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
}

// wait takes a token and says how long to wait before using it (0: at once).
func (b *bucket) wait(now time.Time) time.Duration {
	b.refill(now)
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// allow takes a token if there is one.
func (b *bucket) allow(now time.Time) bool {
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
