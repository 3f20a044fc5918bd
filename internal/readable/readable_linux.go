//go:build linux

package readable

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket is a watched socket: Wait returns when it has become readable
// since the last Wait.
type Socket struct {
	// ready: an edge came (or a read may have left data) since the last
	// Wait took it. wake is sent to after ready is set, and by Remove.
	ready atomic.Bool
	gone  atomic.Bool
	wake  chan struct{}

	rc   syscall.RawConn
	p    *poller
	slot int32
	once sync.Once
}

// poller is the process's epoll instance and the goroutine collecting its
// edges. The instance is itself watched by the runtime's poller, so the
// goroutine sleeps like any reader and costs one epoll_wait per batch.
type poller struct {
	f      *os.File
	epfd   int
	socks  []*Socket // by slot, under mu
	free   []int32
	live   int
	exited chan struct{}
}

var (
	mu  sync.Mutex // the current poller and every poller's slots
	cur *poller
)

// events: input, and the peer's end (RDHUP), edge-triggered: one edge per
// arrival, whoever reads.
const events = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// Watch registers the socket of rc. Its first Wait returns at once: what
// arrived before the watch has had no edge of its own.
func Watch(rc syscall.RawConn) (*Socket, error) {
	s := &Socket{wake: make(chan struct{}, 1), rc: rc}
	s.ready.Store(true)
	mu.Lock()
	p := cur
	if p == nil {
		var err error
		if p, err = start(); err != nil {
			mu.Unlock()
			return nil, &OpError{Op: "watch", Err: err}
		}
		cur = p
	}
	slot := int32(len(p.socks))
	if n := len(p.free); n > 0 {
		slot = p.free[n-1]
	}
	ev := unix.EpollEvent{Events: events, Fd: slot}
	var cerr error
	err := rc.Control(func(fd uintptr) { cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) })
	if err == nil {
		err = cerr
	}
	if err != nil {
		stopped := p.stopIfIdle()
		mu.Unlock()
		stopped.end()
		return nil, &OpError{Op: "watch", Err: err}
	}
	if n := len(p.free); n > 0 && p.free[n-1] == slot {
		p.free = p.free[:n-1]
		p.socks[slot] = s
	} else {
		p.socks = append(p.socks, s)
	}
	s.p, s.slot = p, slot
	p.live++
	mu.Unlock()
	return s, nil
}

// start makes an epoll instance and starts its goroutine (under mu).
func start() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile hands it to the runtime's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	p := &poller{f: os.NewFile(uintptr(epfd), "readable-epoll"), epfd: epfd, exited: make(chan struct{})}
	rc, err := p.f.SyscallConn()
	if err != nil {
		p.f.Close()
		return nil, err
	}
	go p.run(rc)
	return p, nil
}

// run collects edges until the instance is closed. Its callback never
// reports done: RawRead then waits for the instance's next edge without
// first forgetting one that came while the callback ran (which a new
// RawRead would), and each wake-up costs a single epoll_wait.
func (p *poller) run(rc syscall.RawConn) {
	defer close(p.exited)
	evs := make([]unix.EpollEvent, 128)
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), evs, 0)
			if err == unix.EINTR {
				continue
			}
			if n <= 0 {
				return false
			}
			mu.Lock()
			for _, e := range evs[:n] {
				if s := p.socks[e.Fd]; s != nil {
					s.ready.Store(true)
					select {
					case s.wake <- struct{}{}:
					default:
					}
				}
			}
			mu.Unlock()
			if n < len(evs) {
				return false
			}
		}
	})
}

// stopIfIdle retires the instance when nothing is watched any more (under
// mu): the caller then ends it with end, outside mu.
func (p *poller) stopIfIdle() *poller {
	if p.live > 0 || cur != p {
		return nil
	}
	cur = nil
	return p
}

// end closes a retired instance and waits for its goroutine (nil: none
// retired). Not under mu: Close waits for the goroutine's RawRead, whose
// callback may be waiting for mu.
func (p *poller) end() {
	if p != nil {
		p.f.Close()
		<-p.exited
	}
}

// Wait blocks until the socket has become readable since the last Wait
// returned (true), or it is removed (false).
func (s *Socket) Wait() bool {
	for {
		if s.ready.Swap(false) {
			return true
		}
		if s.gone.Load() {
			return false
		}
		<-s.wake
	}
}

// Again says the socket may still hold data (a read filled its buffer):
// the next Wait returns at once.
func (s *Socket) Again() { s.ready.Store(true) }

// Remove unregisters the socket, before its descriptor is closed, and
// ends a Wait. The last removal ends the process's epoll instance and its
// goroutine before it returns. Idempotent.
func (s *Socket) Remove() {
	s.once.Do(func() {
		mu.Lock()
		p := s.p
		// Under Control the descriptor cannot be closed, and so cannot be
		// another socket's by now. Already closed: the kernel dropped
		// the registration with the last reference to the socket.
		_ = s.rc.Control(func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
		p.socks[s.slot] = nil
		p.free = append(p.free, s.slot)
		p.live--
		stopped := p.stopIfIdle()
		mu.Unlock()
		stopped.end()
		s.gone.Store(true)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	})
}
