package refcount

import (
	"context"

	"github.com/drvkit/drvkit/refcount/internal/ancestry"
)

// Attribution labels say on whose behalf work is done when the goroutine
// doing it cannot: a shared test fixture's bridge, simulator or worker
// creating objects for one test among many. A traced object records at
// Init the label bound to its goroutine (or to the nearest goroutine that
// started it and is still labelled); refcount/leaktest attributes it to the
// test of that name. drvkit's hotplug bridge and simulator carry the label
// of the context given to Sim.Inject to the nubs and drivers they create.

type labelKey struct{}

// WithLabel returns a context carrying label; Do binds it.
func WithLabel(ctx context.Context, label string) context.Context {
	return context.WithValue(ctx, labelKey{}, label)
}

// LabelFrom returns the label ctx carries, or "".
func LabelFrom(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	l, _ := ctx.Value(labelKey{}).(string)
	return l
}

// Do runs f with ctx's label (WithLabel) bound to the calling goroutine:
// the traced objects f creates — and those created by goroutines f starts,
// while f runs — carry it. Without a label Do just calls f.
func Do(ctx context.Context, f func()) { DoLabel(LabelFrom(ctx), f) }

// DoLabel is Do with the label itself.
func DoLabel(label string, f func()) {
	if label == "" {
		f()
		return
	}
	g, _ := ancestry.Current()
	restore := ancestry.Bind(g, label)
	defer restore()
	f()
}

// Label is the attribution label bound when a traced object was created
// ("" when none was, or untraced).
func (o *Object) Label() string {
	if o.tr == nil {
		return ""
	}
	return o.tr.label
}
