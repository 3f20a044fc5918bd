//go:build linux

package hotplug_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/drvkit/drvkit/hotplug"
)

// requireRoot skips tests that need real kernel uevents and root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates loop and veth devices and forces the netlink receive buffer")
	}
}

// loopControl opens /dev/loop-control or skips.
func loopControl(t *testing.T) *os.File {
	t.Helper()
	requireRoot(t)
	f, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no /dev/loop-control (loop driver unavailable): %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// addLoop creates a loop device with a free high index (other tests on this
// machine use loops too) and removes it at cleanup unless removed before.
func addLoop(t *testing.T, ctl *os.File) int {
	t.Helper()
	for range 100 {
		idx := 300 + rand.IntN(3000)
		if _, err := ioctlInt(ctl, unix.LOOP_CTL_ADD, idx); err == nil {
			t.Cleanup(func() { ioctlInt(ctl, unix.LOOP_CTL_REMOVE, idx) })
			return idx
		} else if !errors.Is(err, unix.EEXIST) {
			t.Fatalf("LOOP_CTL_ADD %d: %v", idx, err)
		}
	}
	t.Fatal("no free loop index found")
	return -1
}

func ioctlInt(f *os.File, req uint, arg int) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(arg))
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

func removeLoop(t *testing.T, ctl *os.File, idx int) {
	t.Helper()
	// The kernel refuses (EBUSY) while udev-like tools still hold it open.
	for range 50 {
		_, err := ioctlInt(ctl, unix.LOOP_CTL_REMOVE, idx)
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EBUSY) {
			t.Fatalf("LOOP_CTL_REMOVE %d: %v", idx, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("LOOP_CTL_REMOVE %d: still busy", idx)
}

// waitFor reads events until match returns true; the deadline only guards
// against a hang.
func waitFor(t *testing.T, src hotplug.Source, what string, match func(hotplug.Event) bool) hotplug.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		ev, err := src.Next(ctx)
		require.NoError(t, err, "waiting for %s", what)
		if match(ev) {
			return ev
		}
	}
}

func isLoop(ev hotplug.Event, a hotplug.Action, idx int) bool {
	return ev.Action == a && ev.Subsystem == "block" && ev.Name() == fmt.Sprintf("loop%d", idx)
}

func newNetlink(t *testing.T, cfg hotplug.NetlinkConfig) *hotplug.Netlink {
	t.Helper()
	requireRoot(t)
	src, err := hotplug.NewNetlink(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { src.Close() })
	return src
}

func TestNetlinkLoopDevice(t *testing.T) {
	ctl := loopControl(t)
	src := newNetlink(t, hotplug.NetlinkConfig{Classes: []hotplug.Class{hotplug.ClassBlock}})
	idx := addLoop(t, ctl)
	ev := waitFor(t, src, "loop add", func(ev hotplug.Event) bool { return isLoop(ev, hotplug.ActionAdd, idx) })
	require.Equal(t, hotplug.OriginKernel, ev.Origin)
	require.NotZero(t, ev.Seqnum)
	b, err := ev.Block()
	require.NoError(t, err)
	require.Equal(t, 7, b.Major)
	require.Equal(t, fmt.Sprintf("/dev/loop%d", idx), b.DevNode)

	removeLoop(t, ctl, idx)
	ev = waitFor(t, src, "loop remove", func(ev hotplug.Event) bool { return isLoop(ev, hotplug.ActionRemove, idx) })
	require.Greater(t, ev.Seqnum, uint64(0))
	st := src.Stats()
	require.GreaterOrEqual(t, st.Delivered, uint64(2))
}

func TestNetlinkVeth(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip(8) to create veth pairs")
	}
	src := newNetlink(t, hotplug.NetlinkConfig{Classes: []hotplug.Class{}})
	a := fmt.Sprintf("dkh%da", os.Getpid()%100000)
	b := fmt.Sprintf("dkh%db", os.Getpid()%100000)
	out, err := exec.Command("ip", "link", "add", a, "type", "veth", "peer", "name", b).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Cleanup(func() { exec.Command("ip", "link", "del", a).Run() })
	seen := map[string]bool{}
	waitFor(t, src, "veth adds", func(ev hotplug.Event) bool {
		if ev.Action == hotplug.ActionAdd && ev.Subsystem == "net" {
			seen[ev.Name()] = true
			require.Equal(t, ev.Name(), ev.Get("INTERFACE"))
		}
		return seen[a] && seen[b]
	})
	out, err = exec.Command("ip", "link", "del", a).CombinedOutput()
	require.NoError(t, err, "%s", out)
	gone := map[string]bool{}
	waitFor(t, src, "veth removes", func(ev hotplug.Event) bool {
		if ev.Action == hotplug.ActionRemove && ev.Subsystem == "net" {
			gone[ev.Name()] = true
		}
		return gone[a] && gone[b]
	})
}

// TestNetlinkRejectsSpoof sends a well-formed uevent from user space to the
// kernel group (what CVE-2009-1185 exploited): it must be counted and
// dropped, while real kernel events still come through.
func TestNetlinkRejectsSpoof(t *testing.T) {
	ctl := loopControl(t)
	src := newNetlink(t, hotplug.NetlinkConfig{Classes: []hotplug.Class{}})
	before := src.Stats().NotKernel

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}))
	spoofPath := fmt.Sprintf("/devices/virtual/block/spoof%d", os.Getpid())
	spoof, err := hotplug.NewEvent(hotplug.ActionAdd, spoofPath, "block", 999999, "DEVNAME=sda", "DEVTYPE=disk")
	require.NoError(t, err)
	msg, err := spoof.MarshalBinary()
	require.NoError(t, err)
	require.NoError(t, unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}))

	// The kernel delivers in order: once a loop event sent after the spoof
	// arrives, the spoof has been judged.
	idx := addLoop(t, ctl)
	waitFor(t, src, "loop add after the spoof", func(ev hotplug.Event) bool {
		require.NotEqual(t, spoofPath, ev.DevPath, "spoofed uevent was delivered")
		return isLoop(ev, hotplug.ActionAdd, idx)
	})
	require.Greater(t, src.Stats().NotKernel, before)
}

func TestNetlinkCloseUnblocksNext(t *testing.T) {
	src := newNetlink(t, hotplug.NetlinkConfig{Classes: []hotplug.Class{}})
	done := make(chan error, 1)
	go func() {
		for {
			// Other tests may make events; read until Close ends it.
			if _, err := src.Next(context.Background()); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond) // let it park in the poller
	require.NoError(t, src.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, hotplug.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock Next")
	}
	require.NoError(t, src.Close(), "second Close")
}

func TestNetlinkContextCancel(t *testing.T) {
	ctl := loopControl(t)
	src := newNetlink(t, hotplug.NetlinkConfig{Classes: []hotplug.Class{}})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	var err error
	for err == nil {
		_, err = src.Next(ctx)
	}
	require.ErrorIs(t, err, context.Canceled)
	// The source is still usable after a cancelled Next.
	idx := addLoop(t, ctl)
	waitFor(t, src, "loop add", func(ev hotplug.Event) bool { return isLoop(ev, hotplug.ActionAdd, idx) })
}

func TestNetlinkColdplug(t *testing.T) {
	src := newNetlink(t, hotplug.NetlinkConfig{Coldplug: true, Classes: []hotplug.Class{hotplug.ClassBlock}})
	want, err := hotplug.Walk("/sys", []hotplug.Class{hotplug.ClassBlock}, hotplug.OriginColdplug)
	require.NoError(t, err)
	if len(want) == 0 {
		t.Skip("no block devices")
	}
	ev, err := src.Next(context.Background())
	require.NoError(t, err)
	require.Equal(t, hotplug.OriginColdplug, ev.Origin)
	require.Equal(t, hotplug.ActionAdd, ev.Action)
	require.Equal(t, "block", ev.Subsystem)
}

// TestNetlinkOverflowResync forces ENOBUFS with a minimal receive buffer and
// a burst of real loop device events, and checks that what the source
// reported (kernel events and resync events together) ends up equal to
// what /sys/class/block really holds — in particular no remove is lost.
func TestNetlinkOverflowResync(t *testing.T) {
	ctl := loopControl(t)
	var logBuf syncBuf
	var onOverflow atomic.Int64
	src := newNetlink(t, hotplug.NetlinkConfig{ReceiveBuffer: 1, Classes: []hotplug.Class{hotplug.ClassBlock},
		Log: slog.New(slog.NewTextHandler(&logBuf, nil)), OnOverflow: func(int) { onOverflow.Add(1) }})

	const n = 24
	var idx []int
	for range n {
		idx = append(idx, addLoop(t, ctl))
	}
	// Remove every other one: their removes must not be lost.
	for i := 0; i < n; i += 2 {
		removeLoop(t, ctl, idx[i])
	}
	ours := map[string]bool{}
	for _, i := range idx {
		ours[fmt.Sprintf("loop%d", i)] = true
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join("/sys/class/block", name))
		return err == nil
	}
	reported := map[string]bool{}
	consume := func(ev hotplug.Event) {
		if ev.Subsystem == "block" && ours[ev.Name()] {
			switch ev.Action {
			case hotplug.ActionAdd:
				reported[ev.Name()] = true
			case hotplug.ActionRemove:
				delete(reported, ev.Name())
			}
		}
	}
	// A marker loop created after the burst: when its add arrives from the
	// kernel and no overflow happened meanwhile, every event queued before
	// it (kernel and resync) has been delivered. Other processes on this
	// machine can overflow the tiny buffer again, hence the retries.
	settled := false
	for range 40 {
		ov := src.Stats().Overflows
		marker := addLoop(t, ctl)
		ev := waitFor(t, src, "marker loop add", func(ev hotplug.Event) bool {
			consume(ev)
			return isLoop(ev, hotplug.ActionAdd, marker)
		})
		if ev.Origin == hotplug.OriginKernel && src.Stats().Overflows == ov {
			settled = true
			break
		}
	}
	require.True(t, settled, "the source kept overflowing")
	st := src.Stats()
	require.NotZero(t, st.Overflows, "the burst did not overflow a minimal receive buffer")
	require.NotZero(t, st.Resynced)
	t.Logf("stats after the burst: %+v", st)
	// Visible, not only counted: a warning and the daemon's hook.
	require.Contains(t, logBuf.String(), "level=WARN msg=\"uevent overflow: the kernel dropped events; resynced from sysfs\"")
	require.Positive(t, onOverflow.Load())
	for name := range ours {
		require.Equal(t, exists(name), reported[name], "%s: reported state differs from sysfs", name)
	}
	// Every loop we kept is reported. (No count of the removed ones: another
	// process, such as a parallel test package, may re-create one of their
	// indices, which then rightly exists and is reported.)
	for i := 1; i < n; i += 2 {
		require.True(t, reported[fmt.Sprintf("loop%d", idx[i])], "kept loop%d not reported", idx[i])
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
