package driver

// Rematch runs matching on nub again, as Publish did: every category
// without a started driver gets the best candidate of the personalities
// registered now. It is IOKit's terminate-with-rematch: the out-of-process
// host (package driver/host) calls it once a crashed driver's instance is
// gone, so that the driver is relaunched on the same nub, or another driver
// takes it. A nub not published, or terminated, is left alone.
func (r *Registry) Rematch(nub *Service) {
	r.mu.Lock()
	ok := nub.registered && nub.active && nub.kind == kindNub && !r.closed
	r.mu.Unlock()
	if ok {
		r.match(nub)
	}
}
