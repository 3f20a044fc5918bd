package sdnotify

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Common states.
const (
	Ready     = "READY=1"
	Stopping  = "STOPPING=1"
	Reloading = "RELOADING=1"
	Watchdog  = "WATCHDOG=1"
)

// ErrBadState is a state with a NUL byte or without "=", which the
// protocol cannot carry.
var ErrBadState = errors.New("state must be KEY=VALUE lines without NUL")

// Notifier sends states to one notification socket.
type Notifier struct {
	addr *net.UnixAddr // nil: not under systemd
}

// FromEnv returns the notifier of $NOTIFY_SOCKET; without it, a Notifier
// whose Notify does nothing. Like sd_notify's unset_environment, it does
// not unset the variable: children of a daemon rarely inherit it usefully,
// but tests do.
func FromEnv() *Notifier { return New(os.Getenv("NOTIFY_SOCKET")) }

// New returns a notifier for the socket at path ("@name" is abstract); an
// empty path makes a no-op notifier.
func New(path string) *Notifier {
	if path == "" {
		return &Notifier{}
	}
	name := path
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	}
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
}

// Enabled reports whether a notification socket is set.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Notify sends state, e.g. "READY=1\nSTATUS=serving". It sends nothing and
// returns nil when no socket is set.
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	if strings.IndexByte(state, 0) >= 0 || !strings.Contains(state, "=") {
		return &OpError{Op: "notify", Err: ErrBadState}
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return &OpError{Op: "notify", Socket: n.addr.Name, Err: err}
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(state)); err != nil {
		return &OpError{Op: "notify", Socket: n.addr.Name, Err: err}
	}
	return nil
}

// WatchdogInterval is how often systemd expects WATCHDOG=1 — half of
// $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises — or 0 when the
// watchdog is off or meant for another process ($WATCHDOG_PID).
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 {
		return 0
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}

// OpError is a failed notification.
type OpError struct {
	Op     string
	Socket string // as given; an abstract one starts with NUL
	Err    error
}

func (e *OpError) Error() string {
	if e.Socket == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Op + " " + strings.Replace(e.Socket, "\x00", "@", 1) + ": " + e.Err.Error()
}
func (e *OpError) Unwrap() error { return e.Err }
