package refcount

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

//go:noinline
func retainAtX(o *Object, tag any) { o.TaggedRetain(tag) }

//go:noinline
func retainAtY(o *Object, tag any) { o.TaggedRetain(tag) }

// Two retains of one tag at different stacks and one release: nobody knows
// which retain the release paired with, so both stacks are candidates and
// the holder says it is ambiguous — never one picked silently.
func TestAmbiguousPairingShowsEveryCandidate(t *testing.T) {
	n := newNode(t, "Ambiguous", "x")
	retainAtX(&n.Object, "self")
	retainAtY(&n.Object, "self")
	n.TaggedRelease("self")
	t.Cleanup(func() {
		n.TaggedRelease("self")
		n.Release()
	})

	var h Holding
	for _, x := range n.Holders() {
		if x.Tag == "self" {
			h = x
		}
	}
	require.True(t, h.Ambiguous)
	require.Equal(t, 1, h.Count)
	require.Len(t, h.Stacks, 2)
	sites := []string{h.Stacks[0].Blame().Func, h.Stacks[1].Blame().Func}
	require.ElementsMatch(t, []string{Module + "/refcount.retainAtX", Module + "/refcount.retainAtY"}, sites)

	var b bytes.Buffer
	r := NewReport([]*Object{&n.Object})
	require.NoError(t, r.WriteText(&b))
	out := b.String()
	require.Contains(t, out, "ambiguous")
	require.Contains(t, out, "retained at refcount.retainAtX attrib_test.go:")
	require.Contains(t, out, "retained at refcount.retainAtY attrib_test.go:")
	// Leaks counts at most the one outstanding reference per candidate.
	for _, g := range r.Leaks {
		if strings.HasSuffix(g.Site.Func, "retainAtX") || strings.HasSuffix(g.Site.Func, "retainAtY") {
			require.True(t, g.Ambiguous)
			require.Equal(t, 1, g.References)
		}
	}

	// A second release empties the tag: back to exact pairing.
	n.TaggedRelease("self")
	retainAtX(&n.Object, "self")
	for _, x := range n.Holders() {
		if x.Tag == "self" {
			require.False(t, x.Ambiguous)
			require.Len(t, x.Stacks, 1)
		}
	}
}

// Retains at one stack released in any order stay exact: every candidate
// is the same stack.
func TestSameStackPairingIsExact(t *testing.T) {
	n := newNode(t, "Exact", "x")
	for range 3 {
		retainAtX(&n.Object, "t")
	}
	n.TaggedRelease("t")
	t.Cleanup(func() {
		n.TaggedRelease("t")
		n.TaggedRelease("t")
		n.Release()
	})
	for _, h := range n.Holders() {
		if h.Tag == "t" {
			require.False(t, h.Ambiguous)
			require.Equal(t, 2, h.Count)
			require.Equal(t, []int{2}, h.StackCounts)
		}
	}
}

func TestIsFramework(t *testing.T) {
	for _, tc := range []struct {
		f    Frame
		want bool
	}{
		{Frame{Func: Module + "/driver.(*Registry).attachLocked", File: "/src/drvkit/driver/registry.go"}, true},
		{Frame{Func: Module + "/refcount.(*Object).TaggedRetain", File: "/src/drvkit/refcount/object.go"}, true},
		{Frame{Func: Module + "/driver_test.keepProvider", File: "/src/drvkit/driver/attrib_test.go"}, false},
		{Frame{Func: Module + "/driver.keepProvider", File: "/src/drvkit/driver/x_test.go"}, false},
		{Frame{Func: Module + "/examples/leakydriver.(*drv).Start", File: "/src/drvkit/examples/leakydriver/main.go"}, false},
		{Frame{Func: Module + "/refcount/leaktest/testdata/sharedfixture.keep", File: "/x/main.go"}, false},
		{Frame{Func: "example.com/yourpkg.keepProvider", File: "/home/u/yourpkg/file.go"}, false},
		{Frame{Func: "runtime.goexit", File: goroot + "/src/runtime/asm_amd64.s"}, true},
		{Frame{Func: "sync.(*Once).doSlow", File: goroot + "/src/sync/once.go"}, true},
		{Frame{Func: "sync.(*Once).doSlow", File: "sync/once.go"}, true}, // -trimpath
		{Frame{Func: "myapp.keepProvider", File: "/home/u/myapp/main.go"}, false},
		{Frame{Func: "github.com/drvkit/drvkitplus.F", File: "/x.go"}, false},
	} {
		require.Equal(t, tc.want, IsFramework(tc.f), "%+v", tc.f)
	}
}

func TestBlameSkipsFrameworkAndIsOverridable(t *testing.T) {
	s := Stack{Frames: []Frame{
		{Func: Module + "/driver.(*Registry).attachLocked", File: "/d/registry.go", Line: 258},
		{Func: Module + "/driver.(*Registry).Publish", File: "/d/registry.go", Line: 300},
		{Func: "example.com/ourkit.Plug", File: "/ok/plug.go", Line: 10},
		{Func: "example.com/yourpkg.keepProvider", File: "/y/file.go", Line: 43},
	}}
	require.Equal(t, "ourkit.Plug plug.go:10", s.Blame().Short())
	prev := SetFramework(func(f Frame) bool { return IsFramework(f) || strings.HasPrefix(f.Func, "example.com/ourkit.") })
	t.Cleanup(func() { SetFramework(prev) })
	require.Equal(t, "yourpkg.keepProvider file.go:43", s.Blame().Short())
	SetFramework(func(Frame) bool { return true })
	require.Equal(t, s.Frames[0], s.Blame(), "all framework: the innermost frame")
}

// structTag is a structural tag (like drvkit's registry and attachment
// tags); ownerLink a structural Owner (an attachment).
type structTag struct{}

func (structTag) String() string { return "registry" }
func (structTag) StructuralRef() {}

type ownerLink struct{ o *node }

func (l ownerLink) RefObject() *Object { return &l.o.Object }
func (l ownerLink) String() string     { return "client " + l.o.String() }
func (ownerLink) StructuralRef()       {}

// WhyAlive follows owning references only: a driver held open by a client
// that an application holds answers with that one chain; the registry and
// the attachments are context.
func TestWhyAliveOwningChainsFirst(t *testing.T) {
	drv := newNode(t, "WhyDrv", "drv")
	uc := newNode(t, "WhyUC", "uc")
	nub := newNode(t, "WhyNub", "nub")
	for _, n := range []*node{drv, uc, nub} {
		n.TaggedRetain(structTag{})
		n.Release()
	}
	drv.TaggedRetain(ownerLink{nub}) // attachments, both ways
	nub.TaggedRetain(ownerLink{drv})
	drv.TaggedRetain(ownerLink{uc})
	uc.TaggedRetain(ownerLink{drv})
	drv.TaggedRetain(uc) // the open: owning
	uc.TaggedRetain("userclient pid 4242 uid 1000 (scsiapp)")
	t.Cleanup(func() { releaseAll(&drv.Object, &uc.Object, &nub.Object) })

	chains := WhyAlive(&drv.Object)
	require.Len(t, chains, 1, "%v", chains)
	require.Equal(t, `"userclient pid 4242 uid 1000 (scsiapp)" → `+uc.String()+" → "+drv.String(), chains[0].String())
	require.False(t, chains[0].Structural)
	require.Contains(t, chains[0].Site.Func, "TestWhyAliveOwningChainsFirst")

	var roots []string
	for _, c := range StructuralHolders(&drv.Object) {
		require.True(t, c.Structural)
		roots = append(roots, c.Root)
	}
	require.ElementsMatch(t, []string{"registry", "client " + nub.String(), "client " + uc.String()}, roots)

	// Nothing owns the nub: its answer is the structural root, marked so.
	nc := WhyAlive(&nub.Object)
	require.Len(t, nc, 1)
	require.True(t, nc[0].Structural)
	require.Equal(t, `"registry" → `+nub.String()+" (structural)", nc[0].String())
}

//go:noinline
func driverHoldsClient(drv, uc *node) { uc.TaggedRetain(drv) }

//go:noinline
func clientHoldsDriver(drv, uc *node) { drv.TaggedRetain(uc) }

// A cycle is reported with the stacks of both of its references.
func TestCycleEdgesCarryBothStacks(t *testing.T) {
	drv := newNode(t, "CycDrv", "drv")
	uc := newNode(t, "CycUC", "uc")
	driverHoldsClient(drv, uc)
	clientHoldsDriver(drv, uc)
	drv.Release()
	uc.Release()
	t.Cleanup(func() {
		drv.TaggedRelease(uc)
		uc.TaggedRelease(drv)
	})
	r := NewReport(objsOf(drv, uc))
	require.Len(t, r.Cycles, 1)
	require.Len(t, r.Cycles[0].Edges, 2)
	var b bytes.Buffer
	require.NoError(t, r.WriteText(&b))
	require.Contains(t, b.String(), drv.String()+" holds "+uc.String())
	require.Contains(t, b.String(), uc.String()+" holds "+drv.String())
	require.Contains(t, b.String(), "retained at refcount.driverHoldsClient attrib_test.go:")
	require.Contains(t, b.String(), "retained at refcount.clientHoldsDriver attrib_test.go:")
}

// Objects made under a label carry it, also on goroutines started while
// it is bound.
func TestLabels(t *testing.T) {
	Trace("Labelled")
	ctx := WithLabel(context.Background(), "TestSomething")
	require.Equal(t, "TestSomething", LabelFrom(ctx))
	var a, b, c Object
	Do(ctx, func() {
		a.Init("Labelled", nil)
		done := make(chan struct{})
		go func() {
			b.Init("Labelled", nil)
			close(done)
		}()
		<-done
	})
	c.Init("Labelled", nil)
	t.Cleanup(func() { a.Release(); b.Release(); c.Release() })
	require.Equal(t, "TestSomething", a.Label())
	require.Equal(t, "TestSomething", b.Label())
	require.Empty(t, c.Label(), "the label ends with Do")
}
