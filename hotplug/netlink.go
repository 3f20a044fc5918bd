package hotplug

import "log/slog"

// NetlinkConfig configures a netlink source.
type NetlinkConfig struct {
	// SysfsRoot is where resync (and coldplug) read devices; "" means /sys.
	SysfsRoot string
	// Classes are the devices resync keeps consistent after an overflow
	// (and Coldplug reports): ClassesOf the buses the consumer publishes
	// (required; nil is ErrNoClasses, an empty slice tracks nothing).
	// Events of other subsystems are delivered but not tracked.
	Classes []Class
	// Coldplug makes the source first report the devices already present
	// as add events (OriginColdplug). The socket is bound before the walk,
	// so nothing is missed in between; a device added meanwhile may be
	// reported twice (a consumer treats a second add as a change).
	Coldplug bool
	// ReceiveBuffer is the socket receive buffer in bytes; 0 means 16 MiB.
	// As root it is forced past net.core.rmem_max (SO_RCVBUFFORCE).
	ReceiveBuffer int
	// Log receives a warning for every rejected datagram (rate-limited to
	// one line a second, with how many were suppressed: a forger must not
	// flood the log) and for every overflow and resync; nil discards them.
	// Stats counts all of them either way.
	Log *slog.Logger
	// OnOverflow, if set, is called after the kernel dropped events and
	// resync repaired the view, with the number of events resync
	// synthesized: how a daemon tells its monitors why they saw a gap.
	OnOverflow func(resynced int)
}

// Stats counts what a netlink source received and why it dropped
// anything. All counters only grow.
type Stats struct {
	Received  uint64 // datagrams read from the socket
	Delivered uint64 // events returned by Next (kernel, coldplug and resync)
	NotKernel uint64 // dropped: sender port id not 0 (a user-space process)
	NoCreds   uint64 // dropped: no SCM_CREDENTIALS
	NotRoot   uint64 // dropped: credentials uid not 0
	Malformed uint64 // dropped: not a valid uevent (or truncated)
	Overflows uint64 // ENOBUFS: the kernel dropped events for us
	Resynced  uint64 // events synthesized by resync after overflows
}
