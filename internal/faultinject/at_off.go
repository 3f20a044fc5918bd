//go:build drvkit_nofaultinject

package faultinject

// Built with -tags drvkit_nofaultinject: the hooks compile to nothing and
// no injector can be installed.

const compiled = false

// At does nothing in this build.
func At(Point, Target) error { return nil }
