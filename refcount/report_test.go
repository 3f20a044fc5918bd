package refcount

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden files")

// node is a managed type embedding Object, as drivers do.
type node struct {
	Object
	name string
}

func newNode(t *testing.T, class, name string) *node {
	t.Helper()
	Trace(class)
	n := &node{name: name}
	n.Init(class, nil)
	return n
}

// releaseAll drops every outstanding reference so that the test leaves
// nothing live behind.
func releaseAll(objs ...*Object) {
	for _, o := range objs {
		for _, h := range o.Holders() {
			for i := 0; i < h.Count; i++ {
				o.TaggedRelease(h.tag)
			}
		}
	}
}

func objsOf(nodes ...*node) []*Object {
	var out []*Object
	for _, n := range nodes {
		out = append(out, &n.Object)
	}
	return out
}

//go:noinline
func leakSiteA(o *Object) { o.Retain() }

//go:noinline
func leakSiteB(o *Object, tag any) { o.TaggedRetain(tag) }

//go:noinline
func leakSiteC(o *Object) { o.TaggedRetain("cache") }

func TestLeaksGroupedByCallSite(t *testing.T) {
	var objs []*Object
	for i := 0; i < 10; i++ {
		objs = append(objs, &newNode(t, "Grouping", "g").Object)
	}
	t.Cleanup(func() { releaseAll(objs...) })
	type client struct{ n int }
	for i := 0; i < 1000; i++ {
		o := objs[i%len(objs)]
		switch {
		case i < 500:
			leakSiteA(o)
		case i < 800:
			leakSiteB(o, &client{i}) // a distinct tag per reference
		default:
			leakSiteC(o)
		}
	}
	groups := leaksOf(objs)
	// The three leak sites, plus the creators' references at Init.
	require.Len(t, groups, 4)
	bySite := map[string]LeakGroup{}
	for _, g := range groups {
		bySite[g.Site.Func] = g
	}
	pkg := "github.com/drvkit/drvkit/refcount."
	require.Equal(t, 500, bySite[pkg+"leakSiteA"].References)
	require.Equal(t, 300, bySite[pkg+"leakSiteB"].References)
	require.Equal(t, 200, bySite[pkg+"leakSiteC"].References)
	require.Equal(t, 10, bySite[pkg+"newNode"].References)
	require.Equal(t, 10, bySite[pkg+"leakSiteA"].Objects)
	require.Equal(t, []string{"cache"}, bySite[pkg+"leakSiteC"].Tags)
	require.Len(t, bySite[pkg+"leakSiteB"].Tags, 300)
	require.Equal(t, []string{""}, bySite[pkg+"leakSiteA"].Tags)
	require.Equal(t, "leakSiteA", groups[0].Site.Func[len(pkg):], "largest group first")
	for _, g := range groups {
		require.Len(t, g.Stacks, 1, "one call path per site")
	}
}

// cycle builds A→B→C→A (A holds B, B holds C, C holds A) and drops the
// creators' references, as a leaky driver would.
func cycle(t *testing.T, class string) (a, b, c *node) {
	a, b, c = newNode(t, class, "A"), newNode(t, class, "B"), newNode(t, class, "C")
	b.TaggedRetain(a)
	c.TaggedRetain(b)
	a.TaggedRetain(c)
	a.Release()
	b.Release()
	c.Release()
	return a, b, c
}

// breakCycle releases the ownership edges.
func breakCycle(a, b, c *node) {
	b.TaggedRelease(a)
	c.TaggedRelease(b)
	a.TaggedRelease(c)
}

func TestCycleHeldOnlyByItself(t *testing.T) {
	a, b, c := cycle(t, "CycleOnly")
	t.Cleanup(func() { breakCycle(a, b, c) })
	cycles := cyclesTouching(objsOf(a, b, c))
	require.Len(t, cycles, 1)
	require.Equal(t, []ObjRef{refOf(&a.Object), refOf(&b.Object), refOf(&c.Object)}, cycles[0].Objects)
	require.Empty(t, WhyAlive(&c.Object), "no root holds it")
	var buf bytes.Buffer
	require.NoError(t, NewReport(objsOf(a, b, c)).WriteText(&buf))
	require.Contains(t, buf.String(), "cycles (held only by each other):")
	require.Contains(t, buf.String(), cycles[0].String())
}

func TestCycleWithRootIsNotACycleLeak(t *testing.T) {
	a, b, c := cycle(t, "CycleRooted")
	a.TaggedRetain("root")
	t.Cleanup(func() {
		a.TaggedRelease("root")
		breakCycle(a, b, c)
	})
	require.Empty(t, cyclesTouching(objsOf(a, b, c)))
	chains := WhyAlive(&c.Object)
	require.Len(t, chains, 1)
	require.Equal(t, "root", chains[0].Root)
	require.Equal(t, []ObjRef{refOf(&a.Object), refOf(&b.Object), refOf(&c.Object)}, chains[0].Path)
	require.Equal(t, `"root" → `+a.String()+" → "+b.String()+" → "+c.String(), chains[0].String())
	require.Contains(t, chains[0].Site.Func, "TestCycleWithRootIsNotACycleLeak")
}

func TestWhyAliveFollowsEveryRoot(t *testing.T) {
	root := newNode(t, "WhyAlive", "parent")
	child := newNode(t, "WhyAlive", "child")
	child.TaggedRetain(root)
	child.TaggedRetain("client:42")
	t.Cleanup(func() {
		child.TaggedRelease(root)
		child.TaggedRelease("client:42")
		child.Release()
		root.Release()
	})
	var got []string
	for _, c := range WhyAlive(&child.Object) {
		got = append(got, c.String())
	}
	require.ElementsMatch(t, []string{
		`(untagged) → ` + child.String(),
		`"client:42" → ` + child.String(),
		`(untagged) → ` + root.String() + " → " + child.String(),
	}, got)
}

func TestHoldersAndHistory(t *testing.T) {
	SetHistorySize(4)
	o := &newNode(t, "History", "h").Object
	SetHistorySize(64)
	for i := 0; i < 10; i++ {
		o.TaggedRetain("x")
	}
	hs := o.Holders()
	require.Len(t, hs, 2)
	require.Equal(t, "", hs[0].Tag)
	require.Equal(t, "x", hs[1].Tag)
	require.Equal(t, 10, hs[1].Count)
	require.Equal(t, []int{10}, hs[1].StackCounts)
	for i := 0; i < 10; i++ {
		o.TaggedRelease("x")
	}
	o.Release()
	ev := o.History()
	require.Len(t, ev, 4)
	require.Equal(t, []uint64{20, 21, 22, 23}, []uint64{ev[0].Seq, ev[1].Seq, ev[2].Seq, ev[3].Seq})
	require.Equal(t, OpRelease, ev[2].Op)
	require.Equal(t, OpFree, ev[3].Op)
	require.Equal(t, 0, ev[3].Count)
	st := o.TraceStats()
	require.Equal(t, Stats{Events: 23, Retains: 10, Releases: 11, Freed: true}, st)
}

func TestConcurrentRetainRelease(t *testing.T) {
	const goroutines = 8
	pairs := 100_000
	for _, tracedMode := range []bool{false, true} {
		name := "untraced"
		if tracedMode {
			name = "traced"
		}
		t.Run(name, func(t *testing.T) {
			class := "Concurrent-" + name
			if tracedMode {
				Trace(class)
			}
			frees := 0
			shared := make([]*Object, 2)
			for i := range shared {
				shared[i] = new(Object)
				shared[i].Init(class, func() { frees++ })
				require.Equal(t, tracedMode, shared[i].Traced())
			}
			depotBefore := DepotSize()
			var wg sync.WaitGroup
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tag := g // every goroutine pairs its own tag
					for i := 0; i < pairs; i++ {
						o := shared[i%2]
						if i%3 == 0 {
							o.Retain()
							o.Release()
						} else {
							o.TaggedRetain(tag)
							o.TaggedRelease(tag)
						}
					}
				}()
			}
			wg.Wait()
			for _, o := range shared {
				require.Equal(t, 1, o.RetainCount())
				if tracedMode {
					st := o.TraceStats()
					n := uint64(goroutines * pairs / 2)
					require.Equal(t, Stats{Events: 1 + 2*n, Retains: n, Releases: n}, st, "no lost history")
					hs := o.Holders()
					require.Len(t, hs, 1)
					require.Equal(t, 1, hs[0].Count)
					require.LessOrEqual(t, DepotSize()-depotBefore, 8, "stacks interned once per call site")
					h := o.History()
					require.Len(t, h, 64)
					for i := 1; i < len(h); i++ {
						require.Equal(t, h[i-1].Seq+1, h[i].Seq)
					}
				}
				o.Release()
			}
			require.Equal(t, 2, frees)
		})
	}
}

func TestStackDepotDedup(t *testing.T) {
	o := &newNode(t, "Depot", "d").Object
	before, interned := DepotSize(), 0
	for i := 0; i < 100_000; i++ {
		switch i % 3 {
		case 0:
			leakSiteA(o)
		case 1:
			leakSiteC(o)
		default:
			leakSiteB(o, "b")
		}
		if i == 2 {
			// Three new stacks the first time; none if -count ran this
			// test before.
			interned = DepotSize()
			require.LessOrEqual(t, interned-before, 3)
		}
	}
	require.Equal(t, interned, DepotSize(), "every later retain reuses its call site's stack")
	releaseAll(o)
}

func TestEnvironment(t *testing.T) {
	t.Cleanup(TraceOff)
	TraceOff()
	configureFromEnv("EnvA, EnvB")
	require.True(t, Tracing("EnvA"))
	require.True(t, Tracing("EnvB"))
	require.False(t, Tracing("EnvC"))
	TraceOff()
	configureFromEnv("all")
	require.True(t, Tracing("Anything"))
	TraceOff()
	configureFromEnv("off")
	require.False(t, Tracing("Anything"))
}

func TestLiveRegistry(t *testing.T) {
	a := newNode(t, "LiveReg", "a")
	b := newNode(t, "LiveReg", "b")
	require.Equal(t, 2, Live()["LiveReg"])
	a.Release()
	require.Equal(t, 1, Live()["LiveReg"])
	require.NotContains(t, LiveObjects(), &a.Object)
	b.Release()
	require.Zero(t, Live()["LiveReg"])
}

func TestSnapshotDiff(t *testing.T) {
	before := TakeSnapshot()
	a := newNode(t, "SnapDiff", "a")
	leakSiteC(&a.Object)
	after := TakeSnapshot()
	d := Diff(before, after)
	require.False(t, d.Empty())
	require.Contains(t, d.Classes, CountDelta{Class: "SnapDiff", Before: 0, After: 1})
	require.Contains(t, d.Tags, CountDelta{Class: "SnapDiff", Tag: "cache", Before: 0, After: 1})
	require.Contains(t, d.Tags, CountDelta{Class: "SnapDiff", Tag: "", Before: 0, After: 1})
	found := false
	for _, s := range d.Stacks {
		if s.Tag == "cache" {
			found = true
			require.Contains(t, s.Stack.Frames[0].Func, "leakSiteC")
		}
	}
	require.True(t, found)
	var buf bytes.Buffer
	require.NoError(t, d.WriteText(&buf))
	require.Contains(t, buf.String(), `+1 SnapDiff "cache" (0 → 1)`)
	releaseAll(&a.Object)
	require.True(t, Diff(before, TakeSnapshot()).Empty())
}

// normalize makes a report independent of object IDs, paths and lines.
func normalize(s string) string {
	s = regexp.MustCompile(`#\d+`).ReplaceAllString(s, "#N")
	s = regexp.MustCompile(`"id": \d+`).ReplaceAllString(s, `"id": 0`)
	s = regexp.MustCompile(`"file": "[^"]*"`).ReplaceAllString(s, `"file": "F"`)
	s = regexp.MustCompile(`"line": \d+`).ReplaceAllString(s, `"line": 0`)
	return s
}

// goldenFrames trims stacks below the test function, which belong to the
// testing package and change with the Go version.
func trimStacks(r *Report) {
	trim := func(s *Stack) {
		for i, f := range s.Frames {
			if strings.Contains(f.Func, ".Test") {
				s.Frames = s.Frames[:i+1]
				return
			}
		}
	}
	for i := range r.Leaks {
		for j := range r.Leaks[i].Stacks {
			trim(&r.Leaks[i].Stacks[j].Stack)
		}
	}
	for i := range r.Objects {
		for j := range r.Objects[i].Holders {
			for k := range r.Objects[i].Holders[j].Stacks {
				trim(&r.Objects[i].Holders[j].Stacks[k].Stack)
			}
		}
		for j := range r.Objects[i].WhyAlive {
			r.Objects[i].WhyAlive[j].Site.File = ""
		}
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), got)
}

func TestJSONGolden(t *testing.T) {
	a, b, c := cycle(t, "JSONCycle")
	d := newNode(t, "JSONDevice", "sda")
	leakSiteB(&d.Object, "client:7")
	leakSiteB(&d.Object, "client:7")
	t.Cleanup(func() {
		breakCycle(a, b, c)
		releaseAll(&d.Object)
	})
	r := NewReport(objsOf(a, b, c, d))
	trimStacks(r)
	var buf bytes.Buffer
	require.NoError(t, r.WriteJSON(&buf))
	var decoded map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &decoded))
	require.EqualValues(t, SchemaVersion, decoded["schema_version"])
	golden(t, "report.json.golden", normalize(buf.String()))
}

func TestProfileReadBackByPprof(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go tool pprof")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	d := newNode(t, "ProfileDevice", "sdb")
	for i := 0; i < 7; i++ {
		leakSiteA(&d.Object)
	}
	leakSiteB(&d.Object, "client:9")
	t.Cleanup(func() { releaseAll(&d.Object) })
	path := filepath.Join(t.TempDir(), "refs.pb.gz")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, NewReport(objsOf(d)).WriteProfile(f))
	require.NoError(t, f.Close())

	out, err := exec.Command(gobin, "tool", "pprof", "-top", "-nodecount=50", path).CombinedOutput()
	require.NoError(t, err, "%s", out)
	text := string(out)
	require.Contains(t, text, "Type: references")
	require.Regexp(t, `(?m)^\s+7\s.*refcount\.leakSiteA$`, text)
	require.Regexp(t, `(?m)^\s+1\s.*refcount\.leakSiteB$`, text)
	require.Regexp(t, `(?m)^\s+1\s.*refcount\.newNode$`, text)

	out, err = exec.Command(gobin, "tool", "pprof", "-tags", path).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "ProfileDevice")
	require.Contains(t, string(out), "client:9")
}

// The environment variable is read at package initialization: run this
// test binary again with it set.
func TestEnvironmentAtInit(t *testing.T) {
	if os.Getenv("REFCOUNT_ENV_HELPER") != "" {
		if !Tracing("EnvInitA") || !Tracing("EnvInitB") || Tracing("EnvInitC") {
			t.Fatal("DRVKIT_REFTRACE not applied at init")
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEnvironmentAtInit$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "REFCOUNT_ENV_HELPER=1", EnvVar+"=EnvInitA, EnvInitB")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "--- PASS: TestEnvironmentAtInit")
}

// A page details some objects; the summaries still count every one, and
// walking the pages by NextAfter lists each object exactly once.
func TestReportPages(t *testing.T) {
	var objs []*Object
	for range 5 {
		objs = append(objs, &newNode(t, "Paged", "p").Object)
	}
	t.Cleanup(func() { releaseAll(objs...) })
	for _, o := range objs {
		leakSiteA(o)
	}
	var seen []uint64
	after, pages := uint64(0), 0
	for {
		r := NewReportPage(objs, Page{After: after, Limit: 2})
		pages++
		require.Equal(t, 5, r.ObjectsTotal)
		require.Equal(t, []ClassCount{{Class: "Paged", Count: 5}}, r.Live, "the summary covers every object")
		leaked := 0
		for _, g := range r.Leaks {
			leaked += g.References
		}
		require.Equal(t, 10, leaked, "creators' and leakSiteA's references, on every object")
		require.LessOrEqual(t, len(r.Objects), 2)
		for _, o := range r.Objects {
			require.Greater(t, o.ID, after)
			seen = append(seen, o.ID)
		}
		var text strings.Builder
		require.NoError(t, r.WriteText(&text))
		require.Contains(t, text.String(), "refcount: 5 live object(s)")
		if r.NextAfter == 0 {
			require.Contains(t, text.String(), "1 of 5 object(s) detailed\n")
			break
		}
		require.Equal(t, r.Objects[len(r.Objects)-1].ID, r.NextAfter)
		require.Contains(t, text.String(), fmt.Sprintf("2 of 5 object(s) detailed; the next page starts after #%d\n", r.NextAfter))
		after = r.NextAfter
	}
	require.Equal(t, 3, pages)
	want := make([]uint64, len(objs))
	for i, o := range objs {
		want[i] = o.ID()
	}
	require.Equal(t, want, seen)

	whole := NewReport(objs)
	require.Len(t, whole.Objects, 5)
	require.Zero(t, whole.NextAfter)
	var text strings.Builder
	require.NoError(t, whole.WriteText(&text))
	require.NotContains(t, text.String(), "detailed")
}
