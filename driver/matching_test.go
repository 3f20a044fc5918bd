package driver_test

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
)

func activeDrivers(nub *driver.Service) []string {
	var out []string
	for _, c := range nub.Clients() {
		if st := c.State(); st.Active && c.Driver() != nil {
			out = append(out, c.Name())
		}
	}
	sort.Strings(out)
	return out
}

// vendorID is a named integer type, as packages define for their
// constants (scsi.PeripheralType).
type vendorID uint16

func TestNamedIntegerProperties(t *testing.T) {
	type tag string
	p := driver.NewProperties(map[string]any{"type": vendorID(5), "big": ^uint64(0), "tag": tag("x")})
	n, ok := p.Int("type")
	require.True(t, ok)
	require.Equal(t, int64(5), n)
	u, ok := p.Uint("big")
	require.True(t, ok)
	require.Equal(t, ^uint64(0), u)
	_, ok = p.Int("tag")
	require.False(t, ok, "a named string is not a number")
	_, ok = p.Int("missing")
	require.False(t, ok)
}

func TestMatching(t *testing.T) {
	props := map[string]any{"idVendor": uint16(0x0781), "idProduct": 0x5567, "bDeviceClass": 0x08, "serial": "AB12"}
	p := func(name string, score int, cat string, ms ...driver.Match) driver.Personality {
		return driver.Personality{Name: name, Score: score, Category: cat, Match: ms}
	}
	tests := []struct {
		name  string
		pers  []driver.Personality
		probe map[string]int // probe score override; -1 declines
		fail  map[string]bool
		want  []string
	}{
		{name: "exact int of another type", pers: []driver.Personality{p("a", 1, "", driver.MatchValue("idVendor", 0x781))}, want: []string{"a"}},
		{name: "exact int of a named type", pers: []driver.Personality{p("a", 1, "", driver.MatchValue("idVendor", vendorID(0x781)))}, want: []string{"a"}},
		{name: "masked named type", pers: []driver.Personality{p("a", 1, "", driver.MatchMasked("idVendor", uint64(vendorID(0x700)), 0xf00))}, want: []string{"a"}},
		{name: "exact mismatch", pers: []driver.Personality{p("a", 1, "", driver.MatchValue("idVendor", 0x782))}},
		{name: "missing key", pers: []driver.Personality{p("a", 1, "", driver.MatchValue("nope", 1))}},
		{name: "string", pers: []driver.Personality{p("a", 1, "", driver.MatchValue("serial", "AB12"))}, want: []string{"a"}},
		{name: "masked", pers: []driver.Personality{p("a", 1, "", driver.MatchMasked("idProduct", 0x5500, 0xff00))}, want: []string{"a"}},
		{name: "masked mismatch", pers: []driver.Personality{p("a", 1, "", driver.MatchMasked("idProduct", 0x5600, 0xff00))}},
		{name: "func", pers: []driver.Personality{p("a", 1, "", driver.MatchFunc(func(p driver.Properties) bool {
			v, _ := p.Int("bDeviceClass")
			return v == 8
		}))}, want: []string{"a"}},
		{name: "panicking func does not match", pers: []driver.Personality{p("a", 1, "", driver.MatchFunc(func(driver.Properties) bool { panic("x") }))}},
		{name: "all criteria must hold", pers: []driver.Personality{p("a", 1, "", driver.MatchValue("idVendor", 0x781), driver.MatchValue("serial", "no"))}},
		{name: "highest score wins", pers: []driver.Personality{p("lo", 1, ""), p("hi", 9, ""), p("mid", 5, "")}, want: []string{"hi"}},
		{name: "probe score decides", pers: []driver.Personality{p("lo", 1, ""), p("hi", 9, "")}, probe: map[string]int{"lo": 20, "hi": 3}, want: []string{"lo"}},
		{name: "probe declines", pers: []driver.Personality{p("lo", 1, ""), p("hi", 9, "")}, probe: map[string]int{"hi": -1}, want: []string{"lo"}},
		{name: "failed start falls back", pers: []driver.Personality{p("lo", 1, ""), p("hi", 9, "")}, fail: map[string]bool{"hi": true}, want: []string{"lo"}},
		{name: "one per category", pers: []driver.Personality{p("a1", 1, "storage"), p("a2", 2, "storage"), p("b", 1, "power")}, want: []string{"a2", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			for _, pp := range tc.pers {
				name := pp.Name
				pp.New = func() driver.Driver {
					d := &testDriver{log: e.log, start: func(context.Context, *driver.Service) error {
						if tc.fail[name] {
							return errors.New("no")
						}
						return nil
					}}
					if sc, ok := tc.probe[name]; ok {
						return &probeDriver{testDriver: *d, probeFn: func() (int, bool) { return sc, sc >= 0 }}
					}
					return d
				}
				require.NoError(t, e.r.RegisterPersonality(pp))
			}
			nub := e.r.NewNub("USBDevice", "dev", driver.NewProperties(props))
			require.NoError(t, e.r.Publish(nil, nub))
			require.Equal(t, tc.want, activeDrivers(nub))
			require.Equal(t, len(tc.want) > 0, nub.State().Matched)
			require.NoError(t, nub.TerminateSync(ctxT(t)))
			e.quiet()
		})
	}
}

func TestRegisterPersonalityRematches(t *testing.T) {
	e := newEnv(t)
	nub := e.r.NewNub("SCSIDevice", "sda", driver.NewProperties(map[string]any{"type": 0}))
	require.NoError(t, e.r.Publish(nil, nub))
	other := e.r.NewNub("USBDevice", "usb", driver.NewProperties(map[string]any{"type": 0}))
	require.NoError(t, e.r.Publish(nil, other))
	require.Empty(t, activeDrivers(nub))
	mk := func() driver.Driver { return &testDriver{log: e.log} }
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "disk", ProviderClass: "SCSIDevice",
		Match: []driver.Match{driver.MatchValue("type", 0)}, New: mk}))
	require.Equal(t, []string{"disk"}, activeDrivers(nub))
	require.Empty(t, activeDrivers(other), "provider class must match")
	// A better driver in the same category does not replace a running one;
	// another category does start.
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "disk2", Score: 100, ProviderClass: "SCSIDevice", New: mk}))
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "smart", Category: "health", ProviderClass: "SCSIDevice", New: mk}))
	require.Equal(t, []string{"disk", "smart"}, activeDrivers(nub))
	require.Equal(t, 2, e.r.UnregisterPersonality("disk2")+e.r.UnregisterPersonality("smart"))
	require.Error(t, e.r.RegisterPersonality(driver.Personality{Name: "x"}), "New is required")
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	require.NoError(t, other.TerminateSync(ctxT(t)))
	e.quiet()
}

func TestOpenCloseAndMessages(t *testing.T) {
	e := newEnv(t)
	_, d := publishWith(t, e, "disk", func() driver.Driver { return &testDriver{log: e.log} })
	h1 := &testDriver{log: e.log, messages: make(chan driver.Message, 16)}
	h2 := &testDriver{log: e.log, messages: make(chan driver.Message, 16)}
	u1, err := e.r.AttachClient(d, "UserClient", "u1", h1)
	require.NoError(t, err)
	u2, err := e.r.AttachClient(d, "UserClient", "u2", h2)
	require.NoError(t, err)
	stranger, err := e.r.AttachClient(e.r.Root(), "UserClient", "stranger", struct{}{})
	require.NoError(t, err)

	var mu sync.Mutex
	var interest []driver.MessageType
	remove := d.AddInterest(func(m driver.Message) { mu.Lock(); interest = append(interest, m.Type); mu.Unlock() })
	defer remove()

	require.ErrorIs(t, d.Open(stranger, driver.OpenOptions{}), driver.ErrNotAttached)
	require.NoError(t, d.Open(u1, driver.OpenOptions{Exclusive: true}))
	require.NoError(t, d.Open(u1, driver.OpenOptions{Exclusive: true}), "re-open in the same mode is idempotent")
	require.ErrorIs(t, d.Open(u2, driver.OpenOptions{}), driver.ErrExclusive)
	m := waitMessage(t, h1.messages, driver.ServiceIsAttemptingOpen)
	require.Equal(t, u2.ID(), m.From)
	require.ErrorIs(t, d.Close(u2), driver.ErrNotOpen)
	require.NoError(t, d.Close(u1))
	require.NoError(t, d.Open(u1, driver.OpenOptions{}))
	require.NoError(t, d.Open(u2, driver.OpenOptions{}), "shared opens coexist")
	require.ErrorIs(t, d.Open(u2, driver.OpenOptions{Exclusive: true}), driver.ErrExclusive)
	require.Equal(t, []*driver.Service{u1, u2}, d.Openers())
	require.Equal(t, 2, d.State().OpenCount)

	d.MessageClients(driver.MessageDriverDefined+1, "media changed")
	m = waitMessage(t, h2.messages, driver.MessageDriverDefined+1)
	require.Equal(t, "media changed", m.Data)
	require.Equal(t, d.ID(), m.From)
	d.Notify(driver.MessageDriverDefined+2, nil)

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(interest) == 2
	}, 5*time.Second, time.Millisecond)
	mu.Lock()
	require.Equal(t, []driver.MessageType{driver.ServiceWasClosed, driver.MessageDriverDefined + 2}, interest)
	mu.Unlock()

	require.NoError(t, u2.TerminateSync(ctxT(t)), "a client's death closes what it had open")
	require.Equal(t, []*driver.Service{u1}, d.Openers())
	require.NoError(t, stranger.TerminateSync(ctxT(t)))
	require.NoError(t, d.Close(u1))
	e.quiet()
}

func TestClientCall(t *testing.T) {
	e := newEnv(t)
	started := make(chan struct{})
	nub, d := publishWith(t, e, "disk", func() driver.Driver {
		return &testDriver{log: e.log, methods: map[string]driver.Method{
			"inquiry": func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
				return append([]byte("VENDOR "), in...), nil
			},
			"hang": func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
				close(started)
				<-ctx.Done()
				return nil, driver.ErrNoDevice
			},
			"panic": func(context.Context, *driver.Service, []byte) ([]byte, error) { panic("bad method") },
		}}
	})
	out, err := d.Call(ctxT(t), "inquiry", []byte("x"))
	require.NoError(t, err)
	require.Equal(t, "VENDOR x", string(out))
	_, err = d.Call(ctxT(t), "nope", nil)
	require.ErrorIs(t, err, driver.ErrNoMethod)
	_, err = d.Call(ctxT(t), "panic", nil)
	var pe *driver.PanicError
	require.ErrorAs(t, err, &pe)
	errc := make(chan error, 1)
	go func() { _, err := d.Call(context.Background(), "hang", nil); errc <- err }()
	<-started
	nub.Terminate() // surprise removal: the call in flight fails with no device
	require.ErrorIs(t, <-errc, driver.ErrNoDevice)
	_, err = d.Call(ctxT(t), "inquiry", nil)
	require.ErrorIs(t, err, driver.ErrNotActive)
	e.quiet()
}

type closer struct {
	name string
	log  *callLog
	err  error
}

func (c *closer) Close() error { c.log.add("close %s", c.name); return c.err }

var _ io.Closer = (*closer)(nil)

func TestManagedResourcesReverseAfterStop(t *testing.T) {
	e := newEnv(t)
	var inst *driver.Service
	nub, inst := publishWith(t, e, "res", func() driver.Driver {
		return &testDriver{log: e.log, start: func(ctx context.Context, s *driver.Service) error {
			require.NoError(t, s.Manage(&closer{name: "fd", log: e.log}))
			require.NoError(t, s.ManageFunc(func() { e.log.add("release interface") }))
			require.NoError(t, s.Manage(&closer{name: "failing", log: e.log, err: errors.New("EIO")}))
			return nil
		}}
	})
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	require.Equal(t, []string{"start res", "willTerminate res", "didTerminate res", "stop res",
		"close failing", "release interface", "close fd"}, e.log.lifecycle())
	c := &closer{name: "late", log: e.log}
	require.ErrorIs(t, inst.Manage(c), driver.ErrNotActive)
	require.Contains(t, e.log.get(), "close late", "a resource managed too late is closed at once")
	e.quiet()
}

// A bridge driver's Start publishes a child nub whose driver's Start calls
// back into the bridge: no deadlock, and the tree terminates leaves first.
func TestNestedPublishCallsProvider(t *testing.T) {
	e := newEnv(t)
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "bridge", ProviderClass: "USBInterface",
		New: func() driver.Driver {
			return &testDriver{log: e.log,
				methods: map[string]driver.Method{"transfer": func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
					return []byte("csw"), nil
				}},
				start: func(ctx context.Context, s *driver.Service) error {
					lun := s.Registry().NewNub("SCSIDevice", "lun0", driver.NewProperties(map[string]any{"type": 0}))
					return s.Registry().Publish(s, lun)
				}}
		}}))
	var got []byte
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "disk", ProviderClass: "SCSIDevice",
		New: func() driver.Driver {
			return &testDriver{log: e.log, start: func(ctx context.Context, s *driver.Service) error {
				bridge := s.Providers()[0].Providers()[0]
				var err error
				got, err = bridge.Call(ctx, "transfer", []byte("cbw"))
				return err
			}}
		}}))
	nub := e.r.NewNub("USBInterface", "if0", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, nub))
	require.Equal(t, "csw", string(got))
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	require.Equal(t, []string{"stop disk", "stop lun0", "stop bridge", "stop if0"}, e.rec.Steps(driver.StepStop))
	e.quiet()
}
