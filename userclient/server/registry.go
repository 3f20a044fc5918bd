package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/drvkit/drvkit/driver"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// UserClientClass is the class of the user-client services the registry
// backend attaches (what `drvctl inspect` shows under an opened service).
const UserClientClass = "UserClient"

// RegistryBackend opens services of a driver.Registry: each open is a
// user-client service attached as a client of the target, holding it open.
type RegistryBackend struct {
	r *driver.Registry

	// Waiting opens: the registry's lifecycle stream is followed only
	// while someone waits, so that it costs nothing otherwise.
	wmu      sync.Mutex
	changed  chan struct{}
	watchers int
	unsub    func()
}

var (
	_ Backend = (*RegistryBackend)(nil)
	_ Watcher = (*RegistryBackend)(nil)
)

// NewRegistryBackend serves r's services.
func NewRegistryBackend(r *driver.Registry) *RegistryBackend { return &RegistryBackend{r: r} }

// Info describes s for policy and applications. Property values are shown
// as their fmt %v text.
func Info(s *driver.Service) userclient.ServiceInfo {
	info := userclient.ServiceInfo{ID: s.ID(), Class: s.Class(), Name: s.Name()}
	if p := s.Personality(); p != nil {
		info.Personality = p.Name
	}
	props := s.Properties()
	if props.Len() > 0 {
		info.Properties = make(map[string]string, props.Len())
		for _, k := range props.Keys() {
			v, _ := props.Get(k)
			info.Properties[k] = fmt.Sprint(v)
		}
	}
	return info
}

// Lookup lists the active services m matches, by ID; user clients and the
// root are never matched, nor a driver whose Start has not returned: an
// application that opened it then would call a driver not ready yet.
func (b *RegistryBackend) Lookup(m userclient.Match) ([]userclient.ServiceInfo, error) {
	var out []userclient.ServiceInfo
	root := b.r.Root()
	for _, s := range b.r.Services() {
		if s == root || s.Class() == UserClientClass {
			continue
		}
		if st := s.State(); !st.Active || !st.Started {
			continue
		}
		if m.ID != 0 && s.ID() != m.ID || m.Class != "" && s.Class() != m.Class || m.Name != "" && s.Name() != m.Name {
			continue // cheap refusals before the property copy
		}
		if info := Info(s); m.Matches(info) {
			out = append(out, info)
		}
	}
	return out, nil
}

// Watch implements Watcher: changed is closed at the next publication or
// successful Start.
func (b *RegistryBackend) Watch() (<-chan struct{}, func()) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	if b.watchers == 0 {
		b.unsub = b.r.SubscribeLifecycle(b.lifecycle)
	}
	b.watchers++
	return b.changed, sync.OnceFunc(func() {
		b.wmu.Lock()
		b.watchers--
		var unsub func()
		if b.watchers == 0 {
			unsub, b.unsub = b.unsub, nil
		}
		b.wmu.Unlock()
		if unsub != nil {
			unsub() // outside wmu: the registry calls lifecycle with its lock held
		}
	})
}

func (b *RegistryBackend) lifecycle(ev driver.LifecycleEvent) {
	if ev.Step != driver.StepPublish && (ev.Step != driver.StepStart || ev.Err != "") {
		return
	}
	b.wmu.Lock()
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	b.wmu.Unlock()
}

// Open attaches a user client to the service and opens it.
func (b *RegistryBackend) Open(ctx context.Context, id uint64, req OpenRequest) (Session, error) {
	target, release, ok := b.r.Lookup(id)
	if !ok {
		return nil, fmt.Errorf("%w: service %d is gone", wire.ErrNoService, id)
	}
	defer release()
	if !target.State().Started {
		return nil, fmt.Errorf("%w: service %d has not started yet", wire.ErrNoService, id)
	}
	label := req.Cred.Label()
	uc := &userClient{target: target, notify: req.Notify, to: req.to, label: "userclient " + label}
	// Attached with the session's own reference, taken before a racing
	// termination can free the client: svc stays valid for Close and
	// ClientDied, whatever the registry does meanwhile.
	svc, err := b.r.AttachClientHeld(target, UserClientClass, UserClientName(req.Cred), userClientProperties(req.Cred), uc, uc)
	if err != nil {
		return nil, openErr(err)
	}
	uc.svc = svc
	uc.removeInterest = target.AddInterest(uc.interest)
	if err := target.Open(svc, driver.OpenOptions{}); err != nil {
		uc.end()
		return nil, openErr(err)
	}
	return uc, nil
}

// UserClientName is the location of a user client in the registry:
// "pid4242", one word, so that a tree line splits on blanks (awk) as
// ioreg's do.
func UserClientName(c userclient.Cred) string { return "pid" + strconv.FormatInt(int64(c.PID), 10) }

// User-client properties: the peer the client serves. They identify
// another user's process, so drvctl shows them to administrators only.
const (
	PropPID  = "pid"
	PropUID  = "uid"
	PropGID  = "gid"
	PropComm = "comm"
)

func userClientProperties(c userclient.Cred) driver.Properties {
	m := map[string]any{PropPID: int64(c.PID), PropUID: uint64(c.UID), PropGID: uint64(c.GID)}
	comm := c.Comm
	if comm == "" {
		comm = commandName(c.PID)
	}
	if comm != "" {
		m[PropComm] = comm
	}
	return driver.NewProperties(m)
}

// commandName is /proc/PID/comm, "" when it cannot be read.
func commandName(pid int32) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile("/proc/" + strconv.FormatInt(int64(pid), 10) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// openErr: a service terminated under an open is, for the opener, not there.
func openErr(err error) error {
	if errors.Is(err, driver.ErrNotActive) || errors.Is(err, driver.ErrClosed) {
		return fmt.Errorf("%w: %w", wire.ErrNoService, err)
	}
	return mapDriverErr(err)
}

// mapDriverErr turns a registry error into this package's sentinels,
// keeping the registry's text.
func mapDriverErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, driver.ErrNotActive), errors.Is(err, driver.ErrClosed):
		return fmt.Errorf("%w: %w", wire.ErrTerminated, err)
	case errors.Is(err, driver.ErrNoMethod):
		return fmt.Errorf("%w: %w", wire.ErrNoMethod, err)
	case errors.Is(err, driver.ErrExclusive):
		return fmt.Errorf("%w: %w", wire.ErrPermission, err)
	}
	return markNoDevice(err)
}

// markNoDevice makes a driver error that matches driver.ErrNoDevice match
// userclient.ErrNoDevice too — the sentinel its wire code stands for —
// without adding to its text, which already says it.
func markNoDevice(err error) error {
	if errors.Is(err, driver.ErrNoDevice) && !errors.Is(err, wire.ErrNoDevice) {
		return &noDevice{err}
	}
	return err
}

type noDevice struct{ err error }

func (e *noDevice) Error() string   { return e.err.Error() }
func (e *noDevice) Unwrap() []error { return []error{e.err, wire.ErrNoDevice} }

// userClient is the handler of a user-client service: it forwards the
// registry's messages to the application and ends the session.
type userClient struct {
	target *driver.Service
	svc    *driver.Service
	notify func(userclient.Notification)
	to     *entry // the server's, which notify delivers to: called directly

	once           sync.Once
	removeInterest func()
	// label names the session's reference on svc in leak reports and
	// drvctl why: "userclient pid 4242 uid 1000 (scsiapp)". Next to nmu:
	// PrefetchMessage reads it to load nmu's line (it never changes).
	label string

	// Two mailboxes feed the application: the client's own (terminated,
	// requesting close) and the target's interest (other clients closed
	// it). Once the target is terminated, what the interest path brings is
	// held until ServiceIsTerminated went out, so the application never
	// hears of a close caused by a termination before the termination.
	nmu      sync.Mutex
	termSeen bool
	held     []userclient.Notification
	// The last message type's name (guarded by nmu): a driver-defined
	// type's String is a fmt.Sprintf, paid per client of a fan-out.
	lastType driver.MessageType
	lastName string

	// closeChannel closes the direct call channel (under dmu); ended: end ran.
	dmu          sync.Mutex
	closeChannel func()
	ended        bool
}

// CallAdopter is implemented by the driver of a service whose instance
// runs in a process of its own and can serve an application's calls there
// (driver/host's bundles with the Go SDK): the registry backend's sessions
// on it are DirectSessions.
type CallAdopter interface {
	// DirectCalls reports whether the process can take a channel now.
	DirectCalls() bool
	// AdoptCalls hands conn, an application's connection past its
	// handshake, to the process for client's calls; end closes the
	// channel.
	AdoptCalls(ctx context.Context, conn *os.File, client *driver.Service, maxFrame, maxInflight int) (end func(), err error)
}

func (u *userClient) adopter() CallAdopter {
	a, _ := u.target.Driver().(CallAdopter)
	return a
}

// DirectCalls implements DirectSession.
func (u *userClient) DirectCalls() bool {
	a := u.adopter()
	return a != nil && a.DirectCalls() && u.svc.State().Active
}

// HandOver implements DirectSession: the channel ends with the session.
func (u *userClient) HandOver(ctx context.Context, conn *os.File, maxFrame, maxInflight int) error {
	a := u.adopter()
	if a == nil {
		return fmt.Errorf("%w: %s serves no direct calls", wire.ErrNoMethod, u.target)
	}
	end, err := a.AdoptCalls(ctx, conn, u.svc, maxFrame, maxInflight)
	if err != nil {
		return mapDriverErr(err)
	}
	u.dmu.Lock()
	if u.ended || u.closeChannel != nil {
		u.dmu.Unlock()
		end()
		return fmt.Errorf("%w: the handle was closed", wire.ErrClosed)
	}
	u.closeChannel = end
	u.dmu.Unlock()
	return nil
}

// deliver sends n to the application.
func (u *userClient) deliver(n userclient.Notification) { u.deliverIn(n, nil) }

// deliverIn is deliver within a fan-out's batch b (nil: none).
func (u *userClient) deliverIn(n userclient.Notification, b *driver.Batch) {
	if u.to != nil {
		u.to.notifyIn(n, b)
		return
	}
	u.notify(n)
}

// String labels the session's reference (its tag) with the application.
func (u *userClient) String() string { return u.label }

var (
	_ fmt.Stringer                = (*userClient)(nil)
	_ Session                     = (*userClient)(nil)
	_ DirectSession               = (*userClient)(nil)
	_ driver.InlineMessageHandler = (*userClient)(nil)
	_ driver.MessagePrefetcher    = (*userClient)(nil)
)

// PrefetchMessage loads what Message touches: the user client's
// notification fields, its entry and its connection's write side (fields
// set before the first message, or atomics).
func (u *userClient) PrefetchMessage() uintptr {
	var v uintptr
	v += uintptr(len(u.label)) // the line of nmu and lastType
	e := u.to
	if e == nil {
		return v
	}
	if e.readyFast.Load() {
		v++
	}
	c := e.c
	if c.dead.Load() { // the line of qmu and writing
		v++
	}
	return v + uintptr(c.wfd)
}

// MessageInline: Message never blocks (a notification is written if the
// socket takes it at once, queued otherwise, and a client that lets its
// queue overflow is dropped) and never calls into the registry.
func (*userClient) MessageInline() {}

// Message runs on the user client's mailbox: what the registry tells a
// client of the target goes to the application. The application decides
// when to close on ServiceIsRequestingClose; its death closes for it.
func (u *userClient) Message(_ *driver.Service, m driver.Message) error {
	u.nmu.Lock()
	defer u.nmu.Unlock()
	u.deliverIn(u.toNotification(m), m.Batch)
	if m.Type == driver.ServiceIsTerminated && m.From == u.target.ID() && !u.termSeen {
		u.termSeen = true
		for _, n := range u.held {
			u.deliver(n)
		}
		u.held = nil
	}
	return nil
}

// interest forwards what concerns the target but is not sent to its
// clients: other clients closing it, and the driver's own notifications.
func (u *userClient) interest(m driver.Message) {
	switch {
	case m.Type == driver.ServiceWasClosed && (u.svc == nil || m.From != u.svc.ID()):
	case m.Type >= driver.MessageDriverDefined:
	default:
		return
	}
	u.nmu.Lock()
	defer u.nmu.Unlock()
	if !u.termSeen && !u.target.State().Active {
		u.held = append(u.held, u.toNotification(m))
		return
	}
	u.deliver(u.toNotification(m))
}

// toNotification converts m; u.nmu is held.
func (u *userClient) toNotification(m driver.Message) userclient.Notification {
	if u.lastName == "" || u.lastType != m.Type {
		u.lastType, u.lastName = m.Type, m.Type.String()
	}
	n := userclient.Notification{Type: userclient.NotificationType(u.lastName), Service: m.From}
	if m.Type == driver.ServiceIsTerminated || m.Type == driver.ServiceIsRequestingClose {
		n.Cause, n.RootCause = m.Cause.Text(), m.RootCause.Text()
	}
	switch d := m.Data.(type) {
	case nil:
	case []byte:
		n.Data = d
	case string:
		n.Data = []byte(d)
	case error:
		n.Detail = d.Error()
	default:
		if b, err := json.Marshal(d); err == nil {
			n.Data = b
		} else {
			n.Detail = fmt.Sprint(d)
		}
	}
	return n
}

func (u *userClient) Info() userclient.ServiceInfo { return Info(u.target) }
func (u *userClient) ClientID() uint64             { return u.svc.ID() }

// Call runs the target driver's client method. Its context is cancelled
// when the target is terminated; the error is then userclient.ErrTerminated, whatever
// the method returned.
//
// When the termination's root cause is an unplug, the error matches
// userclient.ErrNoDevice as well (and goes out as no_device): whether a
// call met the vanished device or the termination that followed is a
// race the application cannot see, and the answer should not depend on it.
func (u *userClient) Call(ctx context.Context, method string, in []byte) ([]byte, error) {
	if !u.svc.State().Active {
		if u.unplugged() {
			return nil, errUnplugged
		}
		return nil, wire.ErrTerminated // the client names the service
	}
	out, err := u.target.Call(ctx, method, in)
	if err != nil && (!u.target.State().Active || !u.svc.State().Active) && ctx.Err() == nil {
		err = markNoDevice(err)
		if !errors.Is(err, wire.ErrNoDevice) && u.unplugged() {
			err = fmt.Errorf("%w (unplugged): %w", wire.ErrNoDevice, err)
		}
		return nil, fmt.Errorf("%w during the call: %w", wire.ErrTerminated, err)
	}
	return out, mapDriverErr(err)
}

// errUnplugged answers a call on a service terminated because its device
// was removed.
var errUnplugged = fmt.Errorf("%w: %w (unplugged)", wire.ErrTerminated, wire.ErrNoDevice)

// unplugged says whether the target's termination began with its device's
// removal (the bridge terminates the nub with CauseUnplug; the drivers on
// it have it as their root cause).
func (u *userClient) unplugged() bool {
	_, root := u.target.TerminationCause()
	return root == driver.CauseUnplug
}

// Close is the application's close.
func (u *userClient) Close() error { u.end(); return nil }

// ClientDied is the same cleanup when the application is gone: it never
// waits for anything.
func (u *userClient) ClientDied() { u.end() }

// end closes the target (a termination waiting for that proceeds),
// terminates the user client (the registry detaches and frees it) and drops
// the session's reference.
func (u *userClient) end() {
	u.once.Do(func() {
		u.dmu.Lock()
		u.ended = true
		closeChannel := u.closeChannel
		u.dmu.Unlock()
		if closeChannel != nil {
			closeChannel()
		}
		u.removeInterest()
		if err := u.target.Close(u.svc); err != nil && !errors.Is(err, driver.ErrNotOpen) {
			// Not reachable with a well-formed registry; do not lose it.
			u.deliver(userclient.Notification{Type: "CloseFailed", Service: u.target.ID(), Detail: err.Error()})
		}
		u.svc.Terminate()
		u.svc.TaggedRelease(u)
	})
}
