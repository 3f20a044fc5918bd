package userclient

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerCred reads the credentials the kernel recorded when the peer
// connected, plus its supplementary groups where the kernel reports them.
func peerCred(nc *net.UnixConn) (Cred, error) {
	rc, err := nc.SyscallConn()
	if err != nil {
		return Cred{}, err
	}
	var cred Cred
	var serr error
	err = rc.Control(func(fd uintptr) {
		var uc *unix.Ucred
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if serr != nil {
			return
		}
		cred = Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}
		cred.Groups = peerGroups(int(fd))
	})
	if err == nil {
		err = serr
	}
	return cred, err
}

// peerGroups returns SO_PEERGROUPS, or nil if unavailable.
func peerGroups(fd int) []uint32 {
	buf := make([]uint32, 64)
	for range 3 {
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch e {
		case 0:
			return buf[:n/4]
		case unix.ERANGE:
			buf = make([]uint32, n/4+1)
		default:
			return nil
		}
	}
	return nil
}

// peerWatch waits for the peer process to exit on a pidfd registered with
// the Go runtime's poller: no thread is blocked and nothing polls.
type peerWatch struct {
	f    *os.File
	once sync.Once
}

func (w *peerWatch) Close() error {
	w.once.Do(func() { w.f.Close() })
	return nil
}

// watchPeer calls exited when the process that connected nc exits. It uses
// SO_PEERPIDFD (Linux 6.5+), which names exactly the connecting process,
// and falls back to pidfd_open(pid), which is racy only if that process
// already died and its pid was reused before we got here. A peer that is
// already gone is reported at once.
func watchPeer(nc *net.UnixConn, pid int32, exited func()) (io.Closer, error) {
	fd, err := peerPidfd(nc)
	if err != nil {
		fd, err = unix.PidfdOpen(int(pid), unix.PIDFD_NONBLOCK)
	}
	if errors.Is(err, unix.ESRCH) {
		exited()
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd: %w", err)
	}
	// os.NewFile registers a non-blocking descriptor with the poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	w := &peerWatch{f: os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))}
	rc, err := w.f.SyscallConn()
	if err != nil {
		w.Close()
		return nil, err
	}
	go func() {
		// A pidfd polls readable once the process has exited. Read calls
		// the function, and while it returns false parks the goroutine
		// until the poller reports readiness. The zero-timeout poll covers
		// an exit that happened before the descriptor was registered.
		err := rc.Read(func(fd uintptr) bool {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(p, 0)
			return err == nil && n > 0
		})
		if err == nil {
			exited()
		}
	}()
	return w, nil
}

func peerPidfd(nc *net.UnixConn) (int, error) {
	rc, err := nc.SyscallConn()
	if err != nil {
		return -1, err
	}
	pfd := -1
	var serr error
	err = rc.Control(func(fd uintptr) {
		pfd, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	})
	if err == nil {
		err = serr
	}
	return pfd, err
}

// commandName is the process's command name (/proc/PID/comm), "" when it
// cannot be read (the process is gone, /proc is not mounted).
func commandName(pid int32) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
