package faultinject_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/internal/faultinject"
)

type target struct{ id uint64 }

func (t target) ID() uint64   { return t.id }
func (target) Class() string  { return "T" }
func (t target) Name() string { return "t" }

func install(t *testing.T, in *faultinject.Injector) {
	t.Helper()
	un, err := in.Install()
	require.NoError(t, err)
	t.Cleanup(un)
}

func TestDisabledIsNil(t *testing.T) {
	require.False(t, faultinject.Enabled())
	require.NoError(t, faultinject.At(faultinject.Start, target{1}))
}

func TestRules(t *testing.T) {
	in := faultinject.New()
	boom := errors.New("boom")
	in.MustAdd(faultinject.Rule{Point: faultinject.Start, Skip: 1, Action: faultinject.Fail(boom)})
	in.MustAdd(faultinject.Rule{Point: faultinject.Stop, Match: func(s faultinject.Site) bool { return s.Target.ID() == 7 },
		Times: -1, Action: faultinject.Panic("driver bug")})
	install(t, in)

	_, err := in.Install()
	require.ErrorIs(t, err, faultinject.ErrInstalled, "one injector at a time")

	require.NoError(t, faultinject.At(faultinject.Start, target{1}), "skipped")
	err = faultinject.At(faultinject.Start, target{2})
	require.ErrorIs(t, err, faultinject.ErrInjected)
	require.ErrorIs(t, err, boom)
	require.NoError(t, faultinject.At(faultinject.Start, target{3}), "fired once")

	require.NoError(t, faultinject.At(faultinject.Stop, target{1}))
	for range 2 {
		require.PanicsWithValue(t, "driver bug", func() { _ = faultinject.At(faultinject.Stop, target{7}) })
	}
	st := in.Stats()
	require.Equal(t, uint64(3), st.Hits[faultinject.Start])
	require.Equal(t, uint64(3), st.Hits[faultinject.Stop])
	require.Equal(t, map[string]uint64{"fail": 1, "panic": 2}, st.Fired)
	require.Len(t, st.Sites, 3)
	require.Equal(t, `start T#2 "t"`, st.Sites[0].String())
}

func TestRefusesImpossibleFaults(t *testing.T) {
	in := faultinject.New()
	require.ErrorContains(t, in.Add(faultinject.Rule{Point: faultinject.Free, Action: faultinject.Fail(nil)}), "cannot fail")
	require.ErrorContains(t, in.Add(faultinject.Rule{Point: faultinject.Publish, Action: faultinject.Panic(1)}), "would not be a driver's")
	require.Error(t, in.Add(faultinject.Rule{Point: faultinject.Stop}))
	require.Error(t, in.Add(faultinject.Rule{Action: faultinject.Delay(time.Millisecond)}))
	require.Error(t, in.Add(faultinject.Rule{Point: faultinject.Stop, Action: faultinject.Block(nil)}))
}

func TestGateAndDo(t *testing.T) {
	in := faultinject.New()
	g := faultinject.NewGate()
	var did []faultinject.Site
	in.MustAdd(faultinject.Rule{Point: faultinject.Detach, Action: faultinject.Block(g)})
	in.MustAdd(faultinject.Rule{Point: faultinject.Free, Action: faultinject.Do(func(s faultinject.Site) { did = append(did, s) }).Labeled("unplug")})
	install(t, in)
	done := make(chan struct{})
	go func() { _ = faultinject.At(faultinject.Detach, target{4}); close(done) }()
	<-g.Reached()
	require.Equal(t, uint64(4), g.First().Target.ID())
	select {
	case <-done:
		t.Fatal("passed a closed gate")
	default:
	}
	g.Release()
	<-done
	require.NoError(t, faultinject.At(faultinject.Free, target{5}))
	require.Len(t, did, 1)
	require.Equal(t, uint64(1), in.Stats().Fired["unplug"])
}

func TestPoints(t *testing.T) {
	for _, p := range faultinject.Points() {
		q, err := faultinject.ParsePoint(p.String())
		require.NoError(t, err)
		require.Equal(t, p, q)
	}
	_, err := faultinject.ParsePoint("nope")
	require.Error(t, err)
	require.Len(t, faultinject.Points(), 16)
}

// BenchmarkAtDisabled is the cost of one hook with no injector installed.
func BenchmarkAtDisabled(b *testing.B) {
	b.ReportAllocs()
	tg := target{1}
	for b.Loop() {
		_ = faultinject.At(faultinject.Stop, tg)
	}
}

// TestHook: a Hook's error fails a step that can fail and is ignored where
// the step cannot; its panic is the site's.
func TestHook(t *testing.T) {
	in := faultinject.New()
	in.MustAdd(faultinject.Rule{Point: faultinject.Call, Action: faultinject.Hook(func(faultinject.Site) error { return errors.New("io") })})
	in.MustAdd(faultinject.Rule{Point: faultinject.Detach, Action: faultinject.Hook(func(faultinject.Site) error { return errors.New("ignored") })})
	in.MustAdd(faultinject.Rule{Point: faultinject.Stop, Action: faultinject.Hook(func(faultinject.Site) error { panic("boom") })})
	un, err := in.Install()
	require.NoError(t, err)
	defer un()
	err = faultinject.At(faultinject.Call, target{1})
	require.ErrorIs(t, err, faultinject.ErrInjected)
	require.ErrorContains(t, err, "io")
	require.NoError(t, faultinject.At(faultinject.Detach, target{1}))
	require.PanicsWithValue(t, "boom", func() { _ = faultinject.At(faultinject.Stop, target{1}) })
	require.Equal(t, uint64(3), in.Stats().Fired["hook"])
}
