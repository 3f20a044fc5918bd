package driver_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// mboxLog records, in one list, what a service's driver handler and its
// interest listeners receive: both are delivered from the service's one
// mailbox, so the list is the mailbox order.
type mboxLog struct {
	mu  sync.Mutex
	got []string
}

func (l *mboxLog) add(format string, args ...any) {
	l.mu.Lock()
	l.got = append(l.got, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *mboxLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}

// closingClient logs its messages and closes a provider that requests it.
type closingClient struct {
	log  *mboxLog
	name string
	ids  map[uint64]string
}

func (c *closingClient) Message(s *driver.Service, m driver.Message) error {
	c.log.add("%s handler %s from %s", c.name, m.Type, c.ids[m.From])
	if m.Type == driver.ServiceIsRequestingClose {
		for _, p := range s.Providers() {
			if p.ID() == m.From {
				return p.Close(s)
			}
		}
	}
	return nil
}

// TestTerminateMailboxOrder: phase 1 reaches every service once, but a
// client with several providers in the cascade still gets its providers'
// ServiceIsTerminated before its own goes to its interest listeners, as a
// breadth-first walk sends them; a client with one provider gets its
// provider's, then its own. Both hold p1 open, so that termination waits
// for them until every earlier message is delivered.
func TestTerminateMailboxOrder(t *testing.T) {
	e := newEnv(t)
	r := e.r
	p1 := r.NewNub("Bus", "p1", driver.Properties{})
	require.NoError(t, r.Publish(nil, p1))
	p2 := r.NewNub("Bus", "p2", driver.Properties{})
	require.NoError(t, r.Publish(p1, p2))
	ids := map[uint64]string{p1.ID(): "p1", p2.ID(): "p2"}
	logs := map[string]*mboxLog{"c": {}, "d": {}}
	clients := map[string]*driver.Service{}
	for _, name := range []string{"c", "d"} {
		c, err := r.AttachClient(p1, "UserClient", name, &closingClient{log: logs[name], name: name, ids: ids})
		require.NoError(t, err)
		ids[c.ID()] = name
		clients[name] = c
		log := logs[name]
		c.AddInterest(func(m driver.Message) { log.add("%s interest %s from %s", name, m.Type, ids[m.From]) })
		require.NoError(t, p1.Open(c, driver.OpenOptions{}))
	}
	require.NoError(t, r.AttachProvider(clients["c"], p2))

	require.NoError(t, p1.TerminateSync(ctxT(t)))
	// Every service is freed, so every mailbox has been drained.
	require.Equal(t, []string{
		"c handler ServiceIsTerminated from p1",
		"c handler ServiceIsTerminated from p2",
		"c interest ServiceIsTerminated from c",
		"c handler ServiceIsRequestingClose from p1",
	}, logs["c"].get())
	require.Equal(t, []string{
		"d handler ServiceIsTerminated from p1",
		"d interest ServiceIsTerminated from d",
		"d handler ServiceIsRequestingClose from p1",
	}, logs["d"].get())
	e.quiet()
}

// plainDriver has no terminate hooks; its Stop checks that its clients
// went first.
type plainDriver struct{ log *callLog }

func (d *plainDriver) Start(context.Context, *driver.Service) error { return nil }
func (d *plainDriver) Stop(s *driver.Service) {
	d.log.add("stop %s clients=%d", s.Name(), len(s.Clients()))
}

type willDriver struct{ plainDriver }

func (d *willDriver) WillTerminate(s *driver.Service) { d.log.add("willTerminate %s", s.Name()) }

// TestTerminateWithoutSubscribers drives the paths a registry takes when
// nobody subscribes to lifecycle events (phase 2 skips the walks that
// would call, wait for and tell nothing), which the recorder of every other
// test turns off: the lifecycle trace cannot be recorded here, so the
// order is checked through the drivers' own callbacks, freeing through
// TerminateSync and leaks through leaktest.
func TestTerminateWithoutSubscribers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		will    bool // the driver has a WillTerminate hook
		open    bool // a client holds the driver open
		wantLog []string
	}{
		{name: "no hooks", wantLog: []string{"stop drv clients=0"}},
		{name: "open client", open: true, wantLog: []string{"stop drv clients=0"}},
		{name: "WillTerminate", will: true, wantLog: []string{"willTerminate drv", "stop drv clients=0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaktest.Check(t)
			r := driver.NewRegistry(driver.WithLogger(quietLogger()))
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				require.NoError(t, r.Close(ctx))
			})
			log := &callLog{}
			require.NoError(t, r.RegisterPersonality(driver.Personality{Name: "drv", ProviderClass: "Device",
				New: func() driver.Driver {
					if tc.will {
						return &willDriver{plainDriver{log: log}}
					}
					return &plainDriver{log: log}
				}}))
			dev := r.NewNub("Device", "dev", driver.Properties{})
			require.NoError(t, r.Publish(nil, dev))
			drv := dev.Clients()[0]
			mlog := &mboxLog{}
			var ucs []*driver.Service
			for i := range 3 {
				uc, err := r.AttachClient(drv, "UserClient", fmt.Sprint("uc", i), &closingClient{log: mlog, name: fmt.Sprint("uc", i), ids: map[uint64]string{drv.ID(): "drv"}})
				require.NoError(t, err)
				ucs = append(ucs, uc)
			}
			if tc.open {
				require.NoError(t, drv.Open(ucs[1], driver.OpenOptions{}))
			}
			require.NoError(t, dev.TerminateSync(ctxT(t)))
			require.Equal(t, tc.wantLog, log.get())
			if tc.open {
				// Other clients may be stopped before their messages are
				// delivered (then they are dropped); uc1 holds drv up.
				got := mlog.get()
				require.Contains(t, got, "uc1 handler ServiceIsTerminated from drv")
				require.Contains(t, got, "uc1 handler ServiceIsRequestingClose from drv")
			}
			require.Empty(t, r.Services()[1:], "only the root is left")
		})
	}
}
