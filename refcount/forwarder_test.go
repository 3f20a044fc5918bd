package refcount

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// wrapped keeps its count in a named field and forwards the tagged
// operations, as driver.Service does so that its users cannot reach Init
// or the untagged Release.
type wrapped struct{ ref Object }

func (w *wrapped) TaggedRetain(tag any)  { w.ref.TaggedRetain(tag) }
func (w *wrapped) TaggedRelease(tag any) { w.ref.TaggedRelease(tag) }

//go:noinline
func retainThroughForwarder(w *wrapped) { w.TaggedRetain("fwd") }

//go:noinline
func releaseThroughForwarder(w *wrapped) { w.TaggedRelease("nothing held") }

// TestForwarderFramesLeftOut: the stacks of references taken, and of
// misuse, through a TaggedRetain/TaggedRelease forwarder start at the
// forwarder's caller — the code that took the reference — as they do for a
// type that embeds Object.
func TestForwarderFramesLeftOut(t *testing.T) {
	Trace("Forwarded")
	w := &wrapped{}
	w.ref.Init("Forwarded", nil)
	retainThroughForwarder(w)
	var site Frame
	for _, h := range w.ref.Holders() {
		if h.Tag == "fwd" {
			require.Len(t, h.Stacks, 1)
			site = h.Stacks[0].Site()
		}
	}
	require.Equal(t, "github.com/drvkit/drvkit/refcount.retainThroughForwarder", site.Func)
	for _, g := range leaksOf([]*Object{&w.ref}) {
		require.NotContains(t, g.Site.Func, "TaggedRetain", "leak grouped under the forwarder")
	}

	var got *Error
	prev := SetErrorHandler(func(e *Error) { got = e })
	releaseThroughForwarder(w)
	SetErrorHandler(prev)
	require.NotNil(t, got)
	require.Equal(t, ErrTagMismatch, got.Kind)
	require.Equal(t, "github.com/drvkit/drvkit/refcount.releaseThroughForwarder", got.Offender.Site().Func)

	w.TaggedRelease("fwd")
	w.ref.Release()
}
