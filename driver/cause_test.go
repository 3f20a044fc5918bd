package driver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
)

func TestCauseText(t *testing.T) {
	for _, tc := range []struct {
		c          driver.Cause
		text, desc string
	}{
		{driver.CauseUnknown, "unknown", "unknown cause"},
		{driver.CauseUnplug, "unplug", "device removed"},
		{driver.CauseUnload, "unload", "driver unloaded"},
		{driver.CauseAdmin, "admin", "terminated by administrator"},
		{driver.CauseProviderTerminated, "provider", "provider terminated"},
		{driver.CauseShutdown, "shutdown", "daemon shutdown"},
		{driver.CauseCrashed, "crashed", "driver crashed"},
	} {
		t.Run(tc.text, func(t *testing.T) {
			require.Equal(t, tc.desc, tc.c.String())
			require.Equal(t, tc.text, tc.c.Text())
			got, err := driver.ParseCause(tc.text)
			require.NoError(t, err)
			require.Equal(t, tc.c, got)
			b, err := json.Marshal(tc.c)
			require.NoError(t, err)
			require.JSONEq(t, fmt.Sprintf("%q", tc.text), string(b))
			var back driver.Cause
			require.NoError(t, json.Unmarshal(b, &back))
			require.Equal(t, tc.c, back)
		})
	}
	bad := driver.Cause(200)
	require.Equal(t, "Cause(200)", bad.String())
	require.Equal(t, "Cause(200)", bad.Text())
	_, err := bad.MarshalText()
	require.ErrorContains(t, err, "unknown termination cause 200")
	for _, s := range []string{"", "Unplug", "device removed", "Cause(200)", "unplug "} {
		_, err := driver.ParseCause(s)
		require.ErrorContains(t, err, fmt.Sprintf("unknown termination cause %q", s))
	}
	var c driver.Cause = driver.CauseAdmin
	require.Error(t, json.Unmarshal([]byte(`"gone"`), &c))
	require.Equal(t, driver.CauseAdmin, c, "a failed unmarshal keeps the value")
}

// FuzzParseCause: ParseCause accepts exactly the texts Text gives, and
// they round-trip (seeds: testdata/fuzz/FuzzParseCause).
func FuzzParseCause(f *testing.F) {
	for _, s := range []string{"unplug", "unload", "admin", "provider", "shutdown", "unknown", "", "Cause(9)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := driver.ParseCause(s)
		if err != nil {
			require.Equal(t, driver.CauseUnknown, c)
			return
		}
		require.Equal(t, s, c.Text())
		b, err := c.MarshalText()
		require.NoError(t, err)
		require.Equal(t, s, string(b))
	})
}

// causeLog records the termination messages observers get, in a form a
// test can compare: "observer: Type from cause/root".
type causeLog struct {
	mu  sync.Mutex
	got []string
}

func (l *causeLog) add(observer string, m driver.Message, names map[uint64]string) {
	if m.Type != driver.ServiceIsTerminated && m.Type != driver.ServiceIsRequestingClose {
		if m.Cause != driver.CauseUnknown || m.RootCause != driver.CauseUnknown {
			panic(fmt.Sprintf("%s carries a cause", m.Type))
		}
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, fmt.Sprintf("%s: %s %s %s/%s", observer, m.Type, names[m.From], m.Cause.Text(), m.RootCause.Text()))
}

func (l *causeLog) sorted() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]string(nil), l.got...)
	sort.Strings(out)
	return out
}

// causeClient is a user client that records its messages and closes its
// provider when asked.
type causeClient struct {
	log   *causeLog
	names map[uint64]string
}

func (c *causeClient) Message(s *driver.Service, m driver.Message) error {
	c.log.add("u.Message", m, c.names)
	if m.Type == driver.ServiceIsRequestingClose {
		for _, p := range s.Providers() {
			if p.ID() == m.From {
				return p.Close(s)
			}
		}
	}
	return nil
}

// TestTerminationCause terminates the same graph — nub n, its driver drv,
// a user client u holding drv open — along each path and checks the cause
// and root cause that drivers' message handlers, interest listeners and
// the lifecycle trace see. The service terminated directly has the path's
// cause; the ones the termination cascades to have CauseProviderTerminated
// and the path's cause as root cause.
func TestTerminationCause(t *testing.T) {
	type path struct {
		name string
		do   func(t *testing.T, e *env, n *driver.Service)
		want []string          // messages, sorted
		term map[string]string // service → "cause/root" of its terminate event
	}
	cascade := func(c string) ([]string, map[string]string) {
		return []string{
				"drv.Message: ServiceIsTerminated n " + c + "/" + c,
				"drv.interest: ServiceIsTerminated drv provider/" + c,
				"n.interest: ServiceIsTerminated n " + c + "/" + c,
				"u.Message: ServiceIsRequestingClose drv provider/" + c,
				"u.Message: ServiceIsTerminated drv provider/" + c,
				"u.interest: ServiceIsTerminated u provider/" + c,
			}, map[string]string{
				"n": c + "/" + c, "drv": "provider/" + c, "u": "provider/" + c,
			}
	}
	paths := []path{
		{name: "terminate without a cause", do: func(t *testing.T, e *env, n *driver.Service) {
			n.Terminate()
			e.quiet()
		}},
		{name: "administrator", do: func(t *testing.T, e *env, n *driver.Service) {
			n.TerminateWith(driver.CauseAdmin)
			e.quiet()
		}},
		{name: "unplug, synchronous", do: func(t *testing.T, e *env, n *driver.Service) {
			require.NoError(t, n.TerminateSyncWith(ctxT(t), driver.CauseUnplug))
		}},
		{name: "unload", do: func(t *testing.T, e *env, n *driver.Service) {
			require.NoError(t, e.r.Unload(ctxT(t), "drv"))
			e.quiet()
		}, want: []string{
			"drv.interest: ServiceIsTerminated drv unload/unload",
			"u.Message: ServiceIsRequestingClose drv unload/unload",
			"u.Message: ServiceIsTerminated drv unload/unload",
			"u.interest: ServiceIsTerminated u provider/unload",
		}, term: map[string]string{"drv": "unload/unload", "u": "provider/unload"}},
		{name: "shutdown", do: func(t *testing.T, e *env, n *driver.Service) {
			require.NoError(t, e.r.Close(ctxT(t)))
		}, want: []string{
			"drv.Message: ServiceIsTerminated n provider/shutdown",
			"drv.interest: ServiceIsTerminated drv provider/shutdown",
			"n.interest: ServiceIsTerminated n provider/shutdown",
			"u.Message: ServiceIsRequestingClose drv provider/shutdown",
			"u.Message: ServiceIsTerminated drv provider/shutdown",
			"u.interest: ServiceIsTerminated u provider/shutdown",
		}, term: map[string]string{"root": "shutdown/shutdown", "n": "provider/shutdown", "drv": "provider/shutdown", "u": "provider/shutdown"}},
	}
	paths[0].want, paths[0].term = cascade("unknown")
	paths[1].want, paths[1].term = cascade("admin")
	paths[2].want, paths[2].term = cascade("unplug")

	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			e := newEnv(t)
			log := &causeLog{}
			names := map[uint64]string{}
			var drv *driver.Service
			started := make(chan struct{})
			require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "drv", Class: "Drv",
				New: func() driver.Driver {
					return &testDriver{log: e.log,
						start: func(_ context.Context, s *driver.Service) error {
							drv = s
							close(started)
							return nil
						},
						message: func(s *driver.Service, m driver.Message) error {
							log.add("drv.Message", m, names)
							return nil
						},
					}
				}}))
			n := e.r.NewNub("Nub", "n", driver.Properties{})
			names[n.ID()] = "n"
			n.AddInterest(func(m driver.Message) { log.add("n.interest", m, names) })
			require.NoError(t, e.r.Publish(nil, n))
			<-started
			names[drv.ID()] = "drv"
			drv.AddInterest(func(m driver.Message) { log.add("drv.interest", m, names) })
			u, err := e.r.AttachClient(drv, "UserClient", "u", &causeClient{log: log, names: names})
			require.NoError(t, err)
			names[u.ID()] = "u"
			u.AddInterest(func(m driver.Message) { log.add("u.interest", m, names) })
			require.NoError(t, drv.Open(u, driver.OpenOptions{}))

			p.do(t, e, n)

			require.Equal(t, p.want, log.sorted())
			terms := map[string]string{}
			for _, ev := range e.rec.Events() {
				if ev.Step == driver.StepTerminate {
					name := ev.Name
					if ev.ServiceID == e.r.Root().ID() {
						name = "root"
					}
					terms[name] = ev.Cause.Text() + "/" + ev.RootCause.Text()
				}
			}
			require.Equal(t, p.term, terms)
			for name, s := range map[string]*driver.Service{"n": n, "drv": drv, "u": u} {
				c, root := s.TerminationCause()
				want := "unknown/unknown" // still active
				if w, ok := p.term[name]; ok {
					want = w
				}
				require.Equal(t, want, c.Text()+"/"+root.Text(), name)
			}
			e.rec.Check(t)
		})
	}
}
