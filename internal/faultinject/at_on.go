//go:build !drvkit_nofaultinject

package faultinject

const compiled = true

// At is called by the lifecycle at point p for target t. With no injector
// installed it returns nil at once (inlined: one atomic load). Otherwise
// the first armed rule that matches fires: At returns the injected error,
// panics, sleeps, blocks or runs the rule's function.
func At(p Point, t Target) error {
	if current.Load() == nil {
		return nil
	}
	return at(p, t)
}
