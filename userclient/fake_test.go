package userclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/drvkit/drvkit/refcount"
	"github.com/stretchr/testify/require"
)

// fakeRegistry stands in for driver.Registry until the driver branch lands:
// the same lifecycle (a user client attached to its provider with tagged
// references both ways; terminate waits for the open client's close;
// terminate → close → detach → free), in a few lines.
type fakeRegistry struct {
	mu       sync.Mutex
	services map[uint64]*fakeService
	live     map[uint64]*fakeUC
	trace    []string
	freed    chan uint64 // IDs of freed user clients, as they are freed
	freedAt  map[uint64]time.Time
	entered  chan string // method names as calls enter them
}

type fakeService struct {
	refcount.Object
	reg     *fakeRegistry
	info    ServiceInfo
	methods map[string]func(ctx context.Context, in []byte) ([]byte, error)
	active  bool
	clients map[*fakeUC]bool // → open
	closed  chan struct{}    // signalled on every close
}

type fakeUC struct {
	refcount.Object
	reg    *fakeRegistry
	prov   *fakeService
	notify func(Notification)
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	why    string
}

var _ Backend = (*fakeRegistry)(nil)
var _ Session = (*fakeUC)(nil)

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{services: map[uint64]*fakeService{}, live: map[uint64]*fakeUC{}, freedAt: map[uint64]time.Time{},
		freed: make(chan uint64, 4096), entered: make(chan string, 4096)}
}

func (r *fakeRegistry) log(format string, args ...any) {
	r.trace = append(r.trace, fmt.Sprintf(format, args...))
}

// publish adds a device service with the standard test methods.
func (r *fakeRegistry) publish(class, name, personality string) *fakeService {
	s := &fakeService{reg: r, active: true, clients: map[*fakeUC]bool{}, closed: make(chan struct{}, 1024)}
	s.Init(class, nil)
	s.info = ServiceInfo{ID: s.ID(), Class: class, Name: name, Personality: personality}
	s.methods = map[string]func(context.Context, []byte) ([]byte, error){
		"echo": func(_ context.Context, in []byte) ([]byte, error) { return in, nil },
		"block": func(ctx context.Context, in []byte) ([]byte, error) {
			r.entered <- "block"
			<-ctx.Done()
			return nil, ctx.Err()
		},
		"fail": func(context.Context, []byte) ([]byte, error) { return nil, errors.New("the device said no") },
	}
	r.mu.Lock()
	r.services[s.ID()] = s
	r.mu.Unlock()
	return s
}

func (r *fakeRegistry) Lookup(m Match) ([]ServiceInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ServiceInfo
	for _, id := range slices.Sorted(maps.Keys(r.services)) {
		s := r.services[id]
		if s.active && m.Matches(s.info) {
			out = append(out, s.info)
		}
	}
	return out, nil
}

func (r *fakeRegistry) Open(ctx context.Context, id uint64, req OpenRequest) (Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.services[id]
	if s == nil || !s.active {
		return nil, fmt.Errorf("%w: service %d", ErrNoService, id)
	}
	uc := &fakeUC{reg: r, prov: s, notify: req.Notify}
	uc.ctx, uc.cancel = context.WithCancel(context.Background())
	uc.Init("TestUserClient", func() {
		r.mu.Lock()
		r.log("free %d", uc.ID())
		delete(r.live, uc.ID())
		r.freedAt[uc.ID()] = time.Now()
		r.mu.Unlock()
		select { // a wake-up for waitFreed; never block a free
		case r.freed <- uc.ID():
		default:
		}
	})
	// Attach: each side holds the other, tagged with the holder.
	s.TaggedRetain(uc)
	uc.TaggedRetain(s)
	s.clients[uc] = true // attached and open
	r.live[uc.ID()] = uc
	r.log("attach %d to %d", uc.ID(), s.ID())
	r.log("open %d by %d", s.ID(), uc.ID())
	return uc, nil
}

func (u *fakeUC) Info() ServiceInfo { return u.prov.info }
func (u *fakeUC) ClientID() uint64  { return u.ID() }

func (u *fakeUC) Call(ctx context.Context, method string, in []byte) ([]byte, error) {
	if u.ctx.Err() != nil {
		return nil, ErrTerminated
	}
	m := u.prov.methods[method]
	if m == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoMethod, method)
	}
	ctx, stop := mergeCancel(ctx, u.ctx)
	defer stop()
	out, err := m(ctx, in)
	if u.ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %s went away during %s", ErrTerminated, u.prov, method)
	}
	return out, err
}

func mergeCancel(a, b context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(a)
	stop := context.AfterFunc(b, cancel)
	return ctx, func() { stop(); cancel() }
}

func (u *fakeUC) Close() error { u.end("app-closed"); return nil }
func (u *fakeUC) ClientDied()  { u.end("client-died") }

// end closes the provider, terminates the user client and drops every
// reference: the registry's and the attachment's.
func (u *fakeUC) end(why string) {
	u.once.Do(func() {
		r := u.reg
		r.mu.Lock()
		r.log("%s %d", why, u.ID())
		u.why = why
		if u.prov.clients[u] {
			r.log("close %d by %d", u.prov.ID(), u.ID())
			u.prov.clients[u] = false
			u.prov.closed <- struct{}{}
		}
		delete(u.prov.clients, u)
		r.log("terminate %d", u.ID())
		r.log("detach %d from %d", u.ID(), u.prov.ID())
		r.mu.Unlock()
		u.cancel()
		u.prov.TaggedRelease(u)
		u.TaggedRelease(u.prov)
		u.Release() // the registry's reference
	})
}

// terminate is unplug: every user client hears ServiceIsTerminated, calls in
// flight fail, and an open client is asked to close; the returned channel
// is closed when every client is gone (as driver's terminate would wait).
func (s *fakeService) terminate() <-chan struct{} {
	r := s.reg
	r.mu.Lock()
	s.active = false
	r.log("terminate %d", s.ID())
	clients := slices.Collect(maps.Keys(s.clients))
	r.mu.Unlock()
	for _, u := range clients {
		u.notify(Notification{Type: ServiceIsTerminated, Service: s.ID()})
		u.cancel()
		u.notify(Notification{Type: ServiceIsRequestingClose, Service: s.ID()})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r.mu.Lock()
			n := len(s.clients)
			r.mu.Unlock()
			if n == 0 {
				return
			}
			<-s.closed
		}
	}()
	return done
}

// message sends a driver message to every client of s.
func (s *fakeService) message(typ string, data []byte) {
	s.reg.mu.Lock()
	clients := slices.Collect(maps.Keys(s.clients))
	s.reg.mu.Unlock()
	for _, u := range clients {
		u.notify(Notification{Type: NotificationType(typ), Service: s.ID(), Data: data})
	}
}

func (r *fakeRegistry) liveClients() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// waitFreed waits for the user client id to be freed and returns when.
func (r *fakeRegistry) waitFreed(t testing.TB, id uint64) time.Time {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		at, ok := r.freedAt[id]
		r.mu.Unlock()
		if ok {
			return at
		}
		select {
		case <-r.freed:
		case <-deadline:
			t.Fatalf("user client %d not freed; live: %d; trace:\n%v", id, r.liveClients(), r.trace)
		}
	}
}

// checkTrace checks the lifecycle invariants for user client id: closed
// (if it was open) before terminate, terminate < detach < free, each once.
func (r *fakeRegistry) checkTrace(t testing.TB, id uint64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	idx := map[string]int{}
	for i, e := range r.trace {
		var verb string
		var a, b uint64
		if n, _ := fmt.Sscanf(e, "%s %d", &verb, &a); n < 2 {
			continue
		}
		if verb == "close" || verb == "open" {
			fmt.Sscanf(e, "%s %d by %d", &verb, &b, &a)
		}
		if a != id {
			continue
		}
		if _, dup := idx[verb]; dup {
			t.Fatalf("%s %d twice in trace %v", verb, id, r.trace)
		}
		idx[verb] = i
	}
	for _, step := range []string{"attach", "open", "close", "terminate", "detach", "free"} {
		if _, ok := idx[step]; !ok {
			t.Fatalf("no %s of %d in trace %v", step, id, r.trace)
		}
	}
	order := []string{"attach", "open", "close", "terminate", "detach", "free"}
	for i := 1; i < len(order); i++ {
		require.Less(t, idx[order[i-1]], idx[order[i]], "%s before %s for %d: %v", order[i-1], order[i], id, r.trace)
	}
}

// checkClean is the leak check: no user client alive and no reference held
// on any service beyond its creator's.
func (r *fakeRegistry) checkClean(t testing.TB) {
	t.Helper()
	require.Eventually(t, func() bool { return r.liveClients() == 0 }, 10*time.Second, time.Millisecond,
		"user clients still alive")
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.services {
		require.Equal(t, 1, s.RetainCount(), "%v still referenced", s)
		require.Empty(t, s.clients, "%v still has clients", s)
	}
}
