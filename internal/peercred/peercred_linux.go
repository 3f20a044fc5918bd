package peercred

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// Unix returns the credentials the kernel recorded for the peer of a Unix
// socket connection when it connected.
func Unix(c *net.UnixConn) (Cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Cred{}, err
	}
	var uc *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, err
	}
	if serr != nil {
		return Cred{}, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	return Cred{UID: uc.Uid, GID: uc.Gid, PID: uc.Pid}, nil
}

// TCP returns the owner of the peer socket of a TCP connection whose both
// ends are on this host (local is this end's address, remote the peer's).
// The peer's socket is the one listed with remote as its local address
// and local as its remote one.
func TCP(local, remote net.Addr) (Cred, error) {
	l, err := addrPort(local)
	if err != nil {
		return Cred{}, err
	}
	r, err := addrPort(remote)
	if err != nil {
		return Cred{}, err
	}
	if !r.Addr().IsLoopback() {
		return Cred{}, fmt.Errorf("%v: %w (not a loopback peer)", remote, ErrNotFound)
	}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return Cred{}, err
		}
		uid, err := findTCPOwner(f, r, l)
		f.Close()
		if err == nil {
			return Cred{UID: uid, GID: NoGID}, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return Cred{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	return Cred{}, fmt.Errorf("%v: %w", remote, ErrNotFound)
}

func addrPort(a net.Addr) (netip.AddrPort, error) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%v: not a TCP address", a)
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}
