package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient"
)

// TestDaemonCrash SIGKILLs `drvctl serve --sim` during I/O while usbstorage
// holds the stick's interface (the kernel's usb-storage detached), then
// restarts it on the same state directory. The fake USB backend keeps its
// kernel's bindings in a state file (the real kernel keeps them itself):
// after the crash the dead daemon's claim is gone and usb-storage is not
// bound. The restarted daemon re-attaches it from its journal, usbstorage
// claims it again, the application — which saw a clear disconnect error —
// reopens and reads, and an orderly shutdown leaves usb-storage bound and
// the journal empty. A second crash followed by a daemon without
// usbstorage leaves usb-storage re-attached for good.
func TestDaemonCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	leaktest.Check(t)
	bin := buildDrvctl(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	sock := filepath.Join(dir, "drvkit.sock")
	scn := filepath.Join(dir, "crash.scn")
	require.NoError(t, os.WriteFile(scn, []byte("plug usb 2-1 vid=46f4 pid=0001 serial=CRASH ifaces=08/06/50\n"), 0o644))
	const dev = "002/002 46f4:0001" // the sim's first device on bus 2
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// 1. The daemon runs; an application reads from the stick.
	d1 := startDaemon(t, bin, "--sim", scn, "--socket", sock, "--state-dir", state)
	c1, h1 := openStorage(ctx, t, sock)
	require.Equal(t, "usbfs", binding(t, state, dev, "0"), "usbstorage holds the interface")
	require.Equal(t, []usb.JournalEntry{{Bus: 2, Address: 2, Vendor: 0x46f4, Product: 1, Interface: 0, Driver: "usb-storage"}}, journal(t, state))

	var reads atomic.Int64
	ioErr := make(chan error, 1)
	go func() {
		for {
			if _, err := h1.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(0, 8)); err != nil {
				ioErr <- err
				return
			}
			reads.Add(1)
		}
	}()
	for start := time.Now(); reads.Load() < 20; time.Sleep(time.Millisecond) {
		select {
		case err := <-ioErr:
			t.Fatalf("read failed before the crash: %v", err)
		default:
		}
		require.Less(t, time.Since(start), 30*time.Second, "reads too slow")
	}

	// 2. SIGKILL during I/O.
	d1.kill(t)
	select {
	case err := <-ioErr:
		require.ErrorIs(t, err, userclient.ErrClosed, "the application sees the daemon go: %v", err)
		require.Contains(t, err.Error(), "connection closed")
	case <-time.After(10 * time.Second):
		t.Fatal("the call in flight did not fail when the daemon died")
	}
	<-c1.Done()
	require.ErrorIs(t, c1.Err(), userclient.ErrClosed)
	_, err := h1.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(0, 1))
	require.ErrorIs(t, err, userclient.ErrClosed, "a later call says so too")
	require.NoError(t, c1.Close())
	// The daemon died holding the interface: its journal still owes
	// usb-storage.
	require.Len(t, journal(t, state), 1)

	// 3. Restart: the device is back, usb-storage re-attached and claimed
	// again by usbstorage; the application reopens.
	d2 := startDaemon(t, bin, "--sim", scn, "--socket", sock, "--state-dir", state)
	c2, h2 := openStorage(ctx, t, sock)
	out, err := h2.Call(ctx, blockdev.MethodInquiry, nil)
	require.NoError(t, err)
	q, err := blockdev.DecodeInquiry(out)
	require.NoError(t, err)
	require.NotEmpty(t, q.Vendor)
	_, err = h2.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(0, 8))
	require.NoError(t, err, "the reopened device reads")
	require.Equal(t, "usbfs", binding(t, state, dev, "0"))
	require.Len(t, journal(t, state), 1, "one detach owed: the new claim's")
	require.NoError(t, h2.Close())
	require.NoError(t, c2.Close())
	require.NoError(t, d2.stop(t), "orderly shutdown")
	require.Contains(t, d2.stderr(), "re-attached a kernel driver a previous daemon left detached")
	require.Equal(t, "usb-storage", binding(t, state, dev, "0"), "shutdown gave usb-storage back")
	require.Empty(t, journal(t, state))

	// 4. Crash again while holding it, then a daemon that does not load
	// usbstorage: usb-storage is re-attached and stays.
	d3 := startDaemon(t, bin, "--sim", scn, "--socket", sock, "--state-dir", state)
	c3, _ := openStorage(ctx, t, sock)
	d3.kill(t)
	<-c3.Done()
	require.NoError(t, c3.Close())
	d4 := startDaemon(t, bin, "--sim", scn, "--socket", sock, "--state-dir", state, "--drivers", "sg")
	waitFor(t, func() bool { return binding(t, state, dev, "0") == "usb-storage" && len(journal(t, state)) == 0 },
		"usb-storage re-attached by a daemon without usbstorage")
	require.NoError(t, d4.stop(t))
}

type daemonProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	errb bytes.Buffer
	done chan struct{}
	err  error
}

func (d *daemonProc) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.errb.Write(p)
}

func (d *daemonProc) stderr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.errb.String()
}

func startDaemon(t *testing.T, bin string, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{done: make(chan struct{})}
	d.cmd = exec.Command(bin, append([]string{"serve", "--log-level", "debug"}, args...)...)
	d.cmd.Stderr = d
	d.cmd.Stdout = d
	require.NoError(t, d.cmd.Start())
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("daemon %v stderr:\n%s", args, d.stderr())
		}
	})
	return d
}

func (d *daemonProc) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGKILL))
	<-d.done
	ws, _ := d.cmd.ProcessState.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "killed: %v", d.cmd.ProcessState)
}

func (d *daemonProc) stop(t *testing.T) error {
	t.Helper()
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-d.done:
		return d.err
	case <-time.After(30 * time.Second):
		return errors.New("daemon did not stop within 30s")
	}
}

// openStorage dials until the daemon answers and usbstorage is up.
func openStorage(ctx context.Context, t *testing.T, sock string) (*userclient.Client, *userclient.Handle) {
	t.Helper()
	var last error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := userclient.Dial(ctx, sock)
		if err != nil {
			last = err
			time.Sleep(20 * time.Millisecond)
			continue
		}
		h, err := c.Open(ctx, userclient.Match{Class: usbstorage.Class})
		if err == nil {
			return c, h
		}
		last = err
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("could not open %s on %s: %v", usbstorage.Class, sock, last)
	return nil, nil
}

func binding(t *testing.T, state, dev, iface string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "sim-kernel.json"))
	require.NoError(t, err)
	var m map[string]map[string]string
	require.NoError(t, json.Unmarshal(b, &m))
	return m[dev][iface]
}

func journal(t *testing.T, state string) []usb.JournalEntry {
	t.Helper()
	j, err := usb.OpenJournal(filepath.Join(state, "usb-detached.json"))
	require.NoError(t, err)
	return j.Entries()
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func buildDrvctl(t *testing.T) string {
	t.Helper()
	// go test puts its own GOROOT/bin first in PATH (Go 1.19+).
	gobin, err := exec.LookPath("go")
	require.NoError(t, err, "the go command is not in PATH")
	bin := filepath.Join(t.TempDir(), "drvctl")
	cmd := exec.Command(gobin, "build", "-o", bin, "../cmd/drvctl")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build drvctl: %s", strings.TrimSpace(string(out)))
	return bin
}
