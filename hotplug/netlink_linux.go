//go:build linux

package hotplug

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/drvkit/drvkit/internal/ratelog"
)

// ErrNotSupported is never returned on Linux; it exists for portable code.
var ErrNotSupported = errors.New("netlink uevents need Linux")

const (
	kernelGroup       = 1 // the kernel's multicast group; udevd re-broadcasts on 2
	defaultRcvBuf     = 16 << 20
	maxDatagram       = 1 << 16 // uevents are at most 2 KiB; a larger datagram is not one
	maxDrainOnOverrun = 100000
)

// Netlink is a Source of kernel uevents from a NETLINK_KOBJECT_UEVENT
// socket. Only messages from the kernel are accepted (see the package doc).
type Netlink struct {
	f  *os.File
	rc interface {
		Read(func(uintptr) bool) error
	}
	cfg NetlinkConfig
	st  stats
	// coldplug: the number of events the coldplug walk queued.
	coldplug int
	buf      []byte
	oob      []byte
	rx       *rxState
	once     sync.Once
	closed   atomic.Bool

	rejectLog, overflowLog ratelog.Limiter // a forger must not flood the log

	// Owned by the consumer goroutine (Next is single-consumer).
	pending []Event
	tracker *Tracker // what was reported, for the resync
}

var _ Source = (*Netlink)(nil)

// NewNetlink opens and binds the uevent socket. It needs root (or
// CAP_NET_ADMIN for the forced buffer; binding to the kernel group itself
// is allowed to anyone).
func NewNetlink(cfg NetlinkConfig) (*Netlink, error) {
	if cfg.SysfsRoot == "" {
		cfg.SysfsRoot = DefaultSysfsRoot
	}
	if cfg.Classes == nil {
		return nil, &OpError{Op: "socket", Err: ErrNoClasses}
	}
	if cfg.ReceiveBuffer <= 0 {
		cfg.ReceiveBuffer = defaultRcvBuf
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, &OpError{Op: "socket", Err: err}
	}
	fail := func(op string, err error) (*Netlink, error) {
		unix.Close(fd)
		return nil, &OpError{Op: op, Err: err}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return fail("setsockopt SO_PASSCRED", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.ReceiveBuffer); err != nil {
		// Not privileged: the plain option, capped by net.core.rmem_max.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.ReceiveBuffer); err != nil {
			return fail("setsockopt SO_RCVBUF", err)
		}
	}
	// Pid 0: the kernel assigns a unique port id.
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: kernelGroup}); err != nil {
		return fail("bind", err)
	}
	// os.NewFile registers a non-blocking fd with the runtime poller: reads
	// park the goroutine, and Close wakes them with os.ErrClosed.
	f := os.NewFile(uintptr(fd), "netlink-uevent")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, &OpError{Op: "syscallconn", Err: err}
	}
	n := &Netlink{
		f: f, rc: rc, cfg: cfg,
		buf:     make([]byte, maxDatagram),
		oob:     make([]byte, unix.CmsgSpace(unix.SizeofUcred)),
		rx:      new(rxState),
		tracker: NewTracker(cfg.SysfsRoot, cfg.Classes),
	}
	// Bound first, walked second: whatever changes during the walk is
	// queued on the socket.
	devs, err := n.tracker.Walk(OriginColdplug)
	if err != nil {
		f.Close()
		return nil, err
	}
	if cfg.Coldplug {
		n.pending = devs
		n.coldplug = len(devs)
	}
	return n, nil
}

// ColdplugEvents is how many add events the coldplug walk queued: Next
// returns them first, before any uevent (a daemon is ready once it has
// handled that many).
func (n *Netlink) ColdplugEvents() int { return n.coldplug }

// Stats returns the counters.
func (n *Netlink) Stats() Stats { return n.st.snapshot() }

// Close closes the socket; a pending Next returns ErrClosed promptly.
func (n *Netlink) Close() error {
	var err error
	n.once.Do(func() {
		n.closed.Store(true)
		err = n.f.Close()
	})
	return err
}

// Next returns the next event: queued coldplug or resync events first,
// then kernel uevents as they arrive.
func (n *Netlink) Next(ctx context.Context) (Event, error) {
	for {
		if n.closed.Load() {
			return Event{}, ErrClosed
		}
		if len(n.pending) > 0 {
			ev := n.pending[0]
			n.pending = n.pending[1:]
			n.st.delivered.Add(1)
			return ev, nil
		}
		ev, ok, err := n.receive(ctx)
		if err != nil {
			return Event{}, err
		}
		if ok {
			n.tracker.Track(&ev)
			n.st.delivered.Add(1)
			return ev, nil
		}
	}
}

// receive reads one datagram. ok is false when it was dropped (counted) or
// when an overflow queued resync events in n.pending.
func (n *Netlink) receive(ctx context.Context) (ev Event, ok bool, err error) {
	// Wake the blocked read when ctx ends, through a read deadline.
	var woke chan struct{}
	if ctx.Done() != nil {
		woke = make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			defer close(woke)
			n.f.SetReadDeadline(time.Unix(1, 0))
		})
		defer func() {
			if !stop() {
				<-woke
				n.f.SetReadDeadline(time.Time{})
			}
		}()
	}
	var nr, oobn int
	var pid uint32
	var rerr error
	err = n.rc.Read(func(fd uintptr) bool {
		nr, oobn, pid, rerr = n.recv(fd, unix.MSG_TRUNC)
		return rerr != unix.EAGAIN
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		return Event{}, false, ctx.Err()
	case err != nil && n.closed.Load():
		return Event{}, false, ErrClosed
	case err != nil:
		return Event{}, false, &OpError{Op: "recvmsg", Err: err}
	case rerr == unix.ENOBUFS:
		n.st.overflows.Add(1)
		before := n.st.resynced.Load()
		if err := n.resync(); err != nil {
			return Event{}, false, err
		}
		resynced := int(n.st.resynced.Load() - before)
		if sup, ok := n.overflowLog.Allow(); ok {
			n.cfg.Log.Warn("uevent overflow: the kernel dropped events; resynced from sysfs",
				"resynced", resynced, "overflows", n.st.overflows.Load(), "suppressed", sup)
		}
		if n.cfg.OnOverflow != nil {
			n.cfg.OnOverflow(resynced)
		}
		return Event{}, false, nil
	case rerr == unix.EINTR:
		return Event{}, false, nil
	case rerr != nil:
		return Event{}, false, &OpError{Op: "recvmsg", Err: rerr}
	}
	ev, ok = n.accept(nr, oobn, pid)
	return ev, ok, nil
}

// rxState is the recvmsg(2) argument block, allocated once per source so
// that receiving costs no allocation (unix.Recvmsg allocates a Sockaddr per
// call).
type rxState struct {
	msg unix.Msghdr
	iov unix.Iovec
	sa  unix.RawSockaddrNetlink
}

// recv reads one datagram; pid is the sender's port id (^0 if the sender
// address is not netlink).
func (n *Netlink) recv(fd uintptr, flags int) (nr, oobn int, pid uint32, err error) {
	rx := n.rx
	rx.sa = unix.RawSockaddrNetlink{}
	rx.iov.Base = &n.buf[0]
	rx.iov.SetLen(len(n.buf))
	rx.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&rx.sa)), Namelen: unix.SizeofSockaddrNetlink, Iov: &rx.iov}
	rx.msg.Iovlen = 1
	rx.msg.Control = &n.oob[0]
	rx.msg.SetControllen(len(n.oob))
	r, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&rx.msg)), uintptr(flags))
	if errno != 0 {
		return 0, 0, 0, errno
	}
	pid = rx.sa.Pid
	if rx.sa.Family != unix.AF_NETLINK {
		pid = ^uint32(0)
	}
	return int(r), int(rx.msg.Controllen), pid, nil
}

// accept applies the sender checks (CVE-2009-1185: only the kernel may
// speak) and parses.
func (n *Netlink) accept(nr, oobn int, pid uint32) (Event, bool) {
	n.st.received.Add(1)
	if pid != 0 {
		n.st.notKernel.Add(1)
		n.rejected("sender is not the kernel", pid, oobn, nil)
		return Event{}, false
	}
	uid, ok := credUID(n.oob[:oobn])
	if !ok {
		n.st.noCreds.Add(1)
		n.rejected("no sender credentials", pid, oobn, nil)
		return Event{}, false
	}
	if uid != 0 {
		n.st.notRoot.Add(1)
		n.rejected("sender is not root", pid, oobn, nil)
		return Event{}, false
	}
	if nr > len(n.buf) { // MSG_TRUNC reports the real length
		n.st.malformed.Add(1)
		n.rejected("truncated", pid, oobn, nil)
		return Event{}, false
	}
	ev, err := Parse(n.buf[:nr])
	if err != nil {
		n.st.malformed.Add(1)
		n.rejected("malformed", pid, oobn, err)
		return Event{}, false
	}
	return ev, true
}

// rejected logs a dropped datagram with its sender port id and uid, at most
// once a second.
func (n *Netlink) rejected(why string, pid uint32, oobn int, err error) {
	sup, ok := n.rejectLog.Allow()
	if !ok || n.cfg.Log == nil {
		return
	}
	attrs := []any{"why", why, "port_id", pid, "suppressed", sup}
	if uid, ok := credUID(n.oob[:oobn]); ok {
		attrs = append(attrs, "uid", uid)
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	n.cfg.Log.Warn("rejected uevent", attrs...)
}

// credUID finds SCM_CREDENTIALS in control data without allocating (as
// unix.ParseSocketControlMessage would).
func credUID(oob []byte) (uint32, bool) {
	hdr := unix.CmsgLen(0)
	for len(oob) >= hdr {
		var h unix.Cmsghdr
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&h)), unix.SizeofCmsghdr), oob)
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_CREDENTIALS && l >= unix.CmsgLen(unix.SizeofUcred) {
			var c unix.Ucred
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&c)), unix.SizeofUcred), oob[hdr:])
			return c.Uid, true
		}
		next := unix.CmsgSpace(l - hdr)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return 0, false
}

// resync runs after the kernel dropped events: first the datagrams still
// queued (they came after the loss and are delivered in order), then a
// sysfs walk diffed against what was reported, so the consumer ends up
// with exactly the devices present.
func (n *Netlink) resync() error {
	for range maxDrainOnOverrun {
		var nr, oobn int
		var pid uint32
		var rerr error
		err := n.rc.Read(func(fd uintptr) bool {
			nr, oobn, pid, rerr = n.recv(fd, unix.MSG_TRUNC|unix.MSG_DONTWAIT)
			return true // never park: stop at EAGAIN
		})
		if err != nil && n.closed.Load() {
			return ErrClosed
		}
		if err != nil {
			return &OpError{Op: "recvmsg", Err: err}
		}
		if rerr == unix.EAGAIN {
			break
		}
		if rerr == unix.ENOBUFS {
			n.st.overflows.Add(1)
			continue
		}
		if rerr != nil {
			return &OpError{Op: "recvmsg", Err: rerr}
		}
		if ev, ok := n.accept(nr, oobn, pid); ok {
			n.tracker.Track(&ev)
			n.pending = append(n.pending, ev)
		}
	}
	fix, err := n.tracker.Resync()
	if err != nil {
		return err
	}
	n.st.resynced.Add(uint64(len(fix)))
	n.pending = append(n.pending, fix...)
	return nil
}

// stats counts what the netlink source received and dropped.
type stats struct {
	received, delivered, notKernel, noCreds, notRoot, malformed, overflows, resynced atomic.Uint64
}

func (s *stats) snapshot() Stats {
	return Stats{
		Received: s.received.Load(), Delivered: s.delivered.Load(),
		NotKernel: s.notKernel.Load(), NoCreds: s.noCreds.Load(), NotRoot: s.notRoot.Load(),
		Malformed: s.malformed.Load(), Overflows: s.overflows.Load(), Resynced: s.resynced.Load(),
	}
}
