package metrics

// Pending is what the collector keeps between lifecycle steps.
type PendingState struct{ Services, Uevents int }

const MaxPendingUevents = maxPendingUevents

func Pending(c *Collector) PendingState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return PendingState{Services: len(c.nubOrigin) + len(c.drvNub) + len(c.terminating), Uevents: len(c.uevents)}
}
