// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)) without libsystemd: a datagram of NEWLINE-separated
// KEY=VALUE assignments to the unix socket $NOTIFY_SOCKET names (a path, or
// an abstract address written with a leading '@').
//
// A daemon started with Type=notify says READY=1 once it serves, STOPPING=1
// when it begins to shut down, and, under WatchdogSec=, WATCHDOG=1 more
// often than $WATCHDOG_USEC; Watchdog reads that interval.
//
// Outside systemd (no $NOTIFY_SOCKET) every call is a no-op, so a daemon
// notifies unconditionally.
package sdnotify
