package server

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// listenUnix creates the socket file with its final mode and group before
// it listens, without ever following a symlink: the mode is set on the
// unbound socket (bind creates the file with the socket inode's mode, less
// the umask; owner-only at first), the group through an O_PATH|O_NOFOLLOW descriptor of the
// file bind created, and only then does the socket accept connections. A
// chmod by path after bind would follow a symlink swapped in meanwhile.
func listenUnix(path string, mode os.FileMode, gid int) (*net.UnixListener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	closeFd := true
	defer func() {
		if closeFd {
			unix.Close(fd)
		}
	}()
	// Owner-only until the group is right.
	if err := unix.Fchmod(fd, uint32(mode.Perm()&0o700)); err != nil {
		return nil, fmt.Errorf("setting the socket's mode: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, os.NewSyscallError("bind", err)
	}
	unlink := true
	defer func() {
		if unlink {
			unix.Unlink(path)
		}
	}()
	pf, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the socket file: %w", err)
	}
	defer unix.Close(pf)
	var st unix.Stat_t
	if err := unix.Fstat(pf, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Uid != uint32(os.Geteuid()) {
		return nil, fmt.Errorf("socket file was replaced after bind (mode %#o uid %d)", st.Mode, st.Uid)
	}
	if gid >= 0 {
		if err := unix.Fchownat(pf, "", -1, gid, unix.AT_EMPTY_PATH); err != nil {
			return nil, fmt.Errorf("setting the socket's group: %w", err)
		}
	}
	// chmod through the descriptor's /proc link: the inode bind created,
	// whatever the path names now (fchmod does not take O_PATH).
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(pf), uint32(mode.Perm())); err != nil {
		return nil, fmt.Errorf("setting the socket's mode: %w", err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return nil, os.NewSyscallError("listen", err)
	}
	f := os.NewFile(uintptr(fd), path)
	closeFd = false
	defer f.Close() // FileListener dups it
	l, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ln := l.(*net.UnixListener)
	ln.SetUnlinkOnClose(true)
	unlink = false
	return ln, nil
}
