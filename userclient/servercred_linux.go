package userclient

import (
	"net"

	"golang.org/x/sys/unix"
)

// serverUID is the uid of the process that created the listening socket
// nc is connected to, as the kernel recorded it (SO_PEERCRED).
func serverUID(nc net.Conn) (uid uint32, ok bool, err error) {
	uc, isUnix := nc.(*net.UnixConn)
	if !isUnix {
		return 0, false, nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, false, err
	}
	if serr != nil {
		return 0, false, serr
	}
	return cred.Uid, true, nil
}
