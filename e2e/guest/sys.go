//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/e2e/agentproto"
	"golang.org/x/sys/unix"
)

// ueventLog receives kernel uevents from boot on and keeps them all, so a
// host that subscribes late still sees the coldplug of every module.
type ueventLog struct {
	fd      int
	closed  atomic.Bool
	done    chan struct{} // closed when the receiver has closed fd
	mu      sync.Mutex
	events  []*agentproto.Uevent
	changed chan struct{}
}

func listenUevents() (*ueventLog, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, err
	}
	// Loading xhci and usb-storage emits a burst of events; a small
	// buffer would drop some with ENOBUFS.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// The receiver polls for close: closing the fd under a blocked recvmsg
	// does not wake it, and the fd number, reused by the next socket, then
	// has two readers — a stale receiver ate the next listener's events.
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	l := &ueventLog{fd: fd, changed: make(chan struct{}), done: make(chan struct{})}
	go l.receive(fd)
	return l, nil
}

// close stops the receiver, which closes the socket, and waits for it.
func (l *ueventLog) close() {
	l.closed.Store(true)
	<-l.done
}

func (l *ueventLog) receive(fd int) {
	defer close(l.done)
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		if l.closed.Load() {
			return
		}
		n, _, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			if errors.Is(err, unix.ENOBUFS) {
				fmt.Println("E2E uevents FAIL receive buffer overrun: events were lost")
				continue
			}
			if !l.closed.Load() {
				fmt.Printf("E2E uevents FAIL recvmsg: %v\n", err)
			}
			return
		}
		u, err := agentproto.ParseUevent(buf[:n])
		if err != nil {
			fmt.Printf("E2E uevents FAIL %v\n", err)
			continue
		}
		if sa, ok := from.(*unix.SockaddrNetlink); ok {
			u.SenderPID = sa.Pid
		}
		u.Raw = slices.Clone(buf[:n])
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		u.TimeNs = ts.Nano()
		l.mu.Lock()
		l.events = append(l.events, u)
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
}

// stream sends every event, past and future, until stop closes.
func (l *ueventLog) stream(send func(any), stop <-chan struct{}) {
	next := 0
	for {
		l.mu.Lock()
		batch := l.events[next:]
		next = len(l.events)
		changed := l.changed
		l.mu.Unlock()
		for _, u := range batch {
			send(agentproto.Event{Event: "uevent", Uevent: u})
		}
		select {
		case <-changed:
		case <-stop:
			return
		}
	}
}

// wait returns the first event since boot that m selects.
func (l *ueventLog) wait(m agentproto.Match, timeout time.Duration) (*agentproto.Uevent, error) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	next := 0
	for {
		l.mu.Lock()
		for ; next < len(l.events); next++ {
			if m.Matches(l.events[next]) {
				u := l.events[next]
				l.mu.Unlock()
				return u, nil
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-tm.C:
			return nil, fmt.Errorf("no uevent %s within %v", m, timeout)
		}
	}
}

// loadModules loads the modules listed in path, one "PATH [PARAMS…]" a line,
// in order (prepare.sh wrote them dependencies first).
func loadModules(path string) ([]agentproto.ModuleLoad, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []agentproto.ModuleLoad
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		m := agentproto.ModuleLoad{Path: fields[0], Params: strings.Join(fields[1:], " ")}
		t0 := time.Now()
		err := finitModule(m.Path, m.Params)
		m.Ms = float64(time.Since(t0).Microseconds()) / 1000
		if err != nil {
			m.Error = err.Error()
			out = append(out, m)
			return out, fmt.Errorf("loading %s: %w", m.Path, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func finitModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), params, 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

func mountConfigfs() error {
	const dir = "/sys/kernel/config"
	if _, err := os.Stat(dir + "/usb_gadget"); err == nil {
		return nil
	}
	if err := unix.Mount("configfs", dir, "configfs", 0, ""); err != nil {
		return fmt.Errorf("mount configfs: %w", err)
	}
	return nil
}

// openRaw opens a serial port in raw mode: no echo (the host would read its
// own requests back), no line editing, no CR/LF translation.
func openRaw(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CBAUD
	t.Cflag |= unix.CS8 | unix.CLOCAL | unix.CREAD | unix.B115200
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}
