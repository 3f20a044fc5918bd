//go:build linux

package main

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drvkit/drvkit/e2e/agentproto"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestInquiryRejectsNonSG(t *testing.T) {
	_, err := inquiry("/dev/null")
	require.ErrorContains(t, err, "not an sg node")
}

// The agent's uevent socket receives real kernel events on the host too:
// adding and removing a loop device through /dev/loop-control.
func TestUeventLogReceivesKernelEvents(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for /dev/loop-control")
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no loop-control: %v", err)
	}
	defer ctl.Close()
	l, err := listenUevents()
	require.NoError(t, err)
	defer l.close()

	// A free index far from the ones the system uses (the remove below
	// would fail on a busy one anyway).
	idx := 0
	for i := 200; i < 250; i++ {
		if _, err := os.Stat("/sys/block/loop" + itoa(i)); errors.Is(err, os.ErrNotExist) {
			idx = i
			break
		}
	}
	require.NotZero(t, idx)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_ADD, uintptr(idx)); e != 0 {
		t.Skipf("LOOP_CTL_ADD: %v", e)
	}
	t.Cleanup(func() { unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, uintptr(idx)) })

	var mu sync.Mutex
	var got []*agentproto.Uevent
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.stream(func(v any) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, v.(agentproto.Event).Uevent)
		}, stop)
	}()
	find := func(action string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, u := range got {
			if u.Action == action && strings.HasSuffix(u.Devpath, "/block/loop"+itoa(idx)) {
				require.Zero(t, u.SenderPID, "kernel events come from port 0")
				require.Equal(t, "block", u.Subsystem)
				return true
			}
		}
		return false
	}
	require.Eventually(t, func() bool { return find("add") }, 10*time.Second, 10*time.Millisecond)
	// What a boot script's uevent.wait does: search from the start.
	u, err := l.wait(agentproto.Match{Action: "add", Subsystem: "block", Devpath: "/loop" + itoa(idx)}, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "disk", u.Get("DEVTYPE"))
	_, err = l.wait(agentproto.Match{Action: "add", Devpath: "/no/such/device"}, 50*time.Millisecond)
	require.ErrorContains(t, err, "no uevent")
	_, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, uintptr(idx))
	require.Zero(t, e)
	require.Eventually(t, func() bool { return find("remove") }, 10*time.Second, 10*time.Millisecond, "events: %v", dump(&mu, &got))
	close(stop)
	<-done
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestExecute(t *testing.T) {
	r, err := execute(agentproto.ExecArgs{Argv: []string{"sh", "-c", "read x; echo got $x; echo oops >&2; exit 4"}, Stdin: "hi\n"})
	require.NoError(t, err)
	require.Equal(t, 4, r.Exit)
	require.Equal(t, "got hi\n", r.Stdout)
	require.Equal(t, "oops\n", r.Stderr)

	r, err = execute(agentproto.ExecArgs{Argv: []string{"sleep", "10"}, TimeoutMs: 100})
	require.NoError(t, err)
	require.True(t, r.TimedOut)
	require.Equal(t, -1, r.Exit)
	require.Equal(t, "killed", r.Signal)

	_, err = execute(agentproto.ExecArgs{Argv: []string{"/nonexistent/binary"}})
	require.Error(t, err)
	_, err = execute(agentproto.ExecArgs{})
	require.Error(t, err)
}

func TestProcTable(t *testing.T) {
	pt := newProcTable()
	st, err := pt.start(agentproto.StartArgs{Name: "s", Argv: []string{"sh", "-c", "echo up; exec sleep 30"}})
	require.NoError(t, err)
	require.NotZero(t, st.Pid)
	_, err = pt.start(agentproto.StartArgs{Name: "s", Argv: []string{"true"}})
	require.ErrorContains(t, err, "still running")
	_, err = pt.wait(agentproto.WaitArgs{Name: "s", TimeoutMs: 50})
	require.ErrorContains(t, err, "still running")
	require.NoError(t, pt.signal(agentproto.SignalArgs{Name: "s", Signal: int(unix.SIGKILL)}))
	r, err := pt.wait(agentproto.WaitArgs{Name: "s"})
	require.NoError(t, err)
	require.Equal(t, "killed", r.Signal)
	require.Equal(t, "up\n", r.Stdout)
	require.ErrorContains(t, pt.signal(agentproto.SignalArgs{Name: "s", Signal: 15}), "already exited")
	require.ErrorContains(t, pt.signal(agentproto.SignalArgs{Name: "nope", Signal: 15}), "no process")
	// A finished name can be reused.
	_, err = pt.start(agentproto.StartArgs{Name: "s", Argv: []string{"true"}})
	require.NoError(t, err)
	r, err = pt.wait(agentproto.WaitArgs{Name: "s"})
	require.NoError(t, err)
	require.Equal(t, 0, r.Exit)
}

// openRaw on a real pseudo-terminal: what the host writes is not echoed back.
func TestOpenRawDisablesEcho(t *testing.T) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no ptmx: %v", err)
	}
	require.NoError(t, unix.SetNonblock(mfd, true)) // for read deadlines
	master := os.NewFile(uintptr(mfd), "ptmx")
	defer master.Close()
	require.NoError(t, unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	require.NoError(t, err)
	slave, err := openRaw("/dev/pts/" + itoa(n))
	require.NoError(t, err)
	defer slave.Close()

	_, err = master.Write([]byte("{\"id\":1,\"op\":\"hello\"}\n"))
	require.NoError(t, err)
	buf := make([]byte, 64)
	k, err := slave.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "{\"id\":1,\"op\":\"hello\"}\n", string(buf[:k]))
	// Nothing came back to the master: no echo.
	require.NoError(t, master.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, err = master.Read(buf)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	// And output is not post-processed: "\n" stays "\n".
	_, err = slave.Write([]byte("x\n"))
	require.NoError(t, err)
	require.NoError(t, master.SetReadDeadline(time.Now().Add(5*time.Second)))
	k, err = master.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "x\n", string(buf[:k]))
}

func dump(mu *sync.Mutex, got *[]*agentproto.Uevent) string {
	mu.Lock()
	defer mu.Unlock()
	var b strings.Builder
	for _, u := range *got {
		b.WriteString(u.Action + " " + u.Devpath + "\n")
	}
	return b.String()
}
