//go:build linux

package devgrant_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/drvkit/drvkit/driver/devgrant"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/hotplug/hidbus"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// childEnv marks the test binary re-executed as an unprivileged driver
// process (TestMain runs runChild instead of the tests).
const childEnv = "DEVGRANT_PRIVILEGE_CHILD"

// nobody is the unprivileged user the child runs as.
const nobody = 65534

// grantMeta is what the test sends along with the descriptors: a File
// without its *os.File, in the same order.
type grantMeta struct{ Resource, Node, Kind string }

// TestLeastPrivilege runs a real driver process as nobody with
// no_new_privs, hands it (SCM_RIGHTS) the descriptors of four grants — a
// root-only character device node opened by the daemon (/dev/zero's
// numbers, standing in for a hidraw node), and the sockets of a simulated
// keyboard, disk and USB stick — and checks, from inside that process,
// that it reads and writes its granted devices through
// devgrant.Resources (an INQUIRY over sg and over bulk-only transport
// included), that opening another root-only device node by path fails
// with EACCES, that so does opening its own granted node by path (the
// grant is the descriptor, not a permission), and that its resources
// refuse a node, a disk and a USB device not granted.
func TestLeastPrivilege(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates device nodes and runs a child as nobody")
	}
	leaktest.Check(t)
	checkFDs(t)
	dir, err := os.MkdirTemp("", "devgrant-priv-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755)) // nobody may look up the nodes: their own mode refuses
	granted, other := filepath.Join(dir, "hidraw7"), filepath.Join(dir, "hidraw8")
	for node, minor := range map[string]uint32{granted: 5, other: 3} {
		if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(1, minor))); err != nil {
			t.Skipf("cannot create a device node here: %v", err)
		}
	}
	exe := copyExecutable(t, dir)

	r := newRegistry(t)
	real := drivertable.NewResources()
	drivertable.Provide(real, devgrant.HIDKey, func() (hid.Backend, error) { return hid.Hidraw{}, nil })
	gReal := grant(t, real, publish(t, r, devgrant.HIDProviderClass, "hid7", map[string]any{hidbus.PropHidraw: granted}))
	require.Equal(t, devgrant.KindHidraw, gReal.Files[0].Kind)

	sim := hidsim.New()
	fake := sim.Plug("/dev/hidraw0", hidsim.Spec{Info: hid.Info{Bus: hid.BusUSB, Vendor: 1, Product: 2}})
	simRes := drivertable.NewResources()
	drivertable.Provide(simRes, devgrant.HIDKey, func() (hid.Backend, error) { return sim, nil })
	gSim := grant(t, simRes, publish(t, r, devgrant.HIDProviderClass, "hid0", map[string]any{hidbus.PropHidraw: "/dev/hidraw0"}))
	require.True(t, fake.Input([]byte{0, 0, 0x04, 0, 0, 0, 0, 0}))

	// A simulated disk and a simulated stick, for the other two classes.
	sgr := newSGRig(t)
	usbr := newUSBRig(t)

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	ours, theirs := os.NewFile(uintptr(fds[0]), "handoff"), os.NewFile(uintptr(fds[1]), "handoff")
	defer ours.Close()

	var out bytes.Buffer
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "DEVGRANT_OTHER="+other)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	require.NoError(t, cmd.Start())
	theirs.Close()

	files := append(append([]devgrant.File(nil), gReal.Files...), gSim.Files...)
	files = append(append(files, sgr.g.Files...), usbr.g.Files...)
	meta := make([]grantMeta, len(files))
	rights := make([]int, len(files))
	for i, f := range files {
		meta[i] = grantMeta{f.Resource, f.Node, f.Kind}
		rights[i] = int(f.File.Fd())
	}
	b, err := json.Marshal(meta)
	require.NoError(t, err)
	require.NoError(t, unix.Sendmsg(int(ours.Fd()), b, unix.UnixRights(rights...), nil, 0))

	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-waited
		t.Fatalf("driver process hung; output:\n%s", out.String())
	}
	require.NoError(t, err, "driver process failed:\n%s", out.String())

	lines := map[string]string{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
			lines[k] = v
		}
	}
	require.Equal(t, map[string]string{
		"credentials":       "uid 65534 gid 65534 no_new_privs 1",
		"granted node":      "read 16 bytes through the grant",
		"granted simulated": "report 0000040000000000, output written",
		"granted by path":   "permission denied",
		"other by path":     "permission denied",
		"other by resource": "device not granted to this driver",
		"granted sg":        "QEMU HARDDISK",
		"other sg":          "device not granted to this driver",
		"granted usb":       "QEMU HARDDISK over bulk-only transport",
		"other usb":         "device not granted to this driver",
	}, lines, "driver process output:\n%s", out.String())
	require.Equal(t, [][]byte{{0, 0x03}}, fake.Outputs(), "the unprivileged driver's output report reached the device")
}

// copyExecutable copies the test binary where nobody can run it (go test
// builds it in a directory only its user can enter).
func copyExecutable(t *testing.T, dir string) string {
	src, err := os.Open("/proc/self/exe")
	require.NoError(t, err)
	defer src.Close()
	exe := filepath.Join(dir, "devgrant.test")
	dst, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, errors.Join(err, dst.Close()))
	return exe
}

// runChild is the driver process of TestLeastPrivilege. It prints one
// "check: result" line per check and exits non-zero when it cannot run.
func runChild() int {
	fail := func(format string, args ...any) int {
		fmt.Printf("error: "+format+"\n", args...)
		return 1
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail("no_new_privs: %v", err)
	}
	nnp, _ := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	fmt.Printf("credentials: uid %d gid %d no_new_privs %d\n", os.Getuid(), os.Getgid(), nnp)

	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(8*4))
	n, oobn, _, _, err := unix.Recvmsg(3, buf, oob, 0)
	if err != nil {
		return fail("receive: %v", err)
	}
	unix.Close(3)
	var meta []grantMeta
	if err := json.Unmarshal(buf[:n], &meta); err != nil {
		return fail("metadata: %v", err)
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(cmsgs) != 1 {
		return fail("control message: %v", err)
	}
	fds, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(fds) != len(meta) {
		return fail("rights: %d descriptors for %d grants (%v)", len(fds), len(meta), err)
	}
	var files []devgrant.Received
	for i, m := range meta {
		files = append(files, devgrant.Received{Resource: m.Resource, Node: m.Node, Kind: m.Kind, File: os.NewFile(uintptr(fds[i]), m.Node)})
	}
	back, err := devgrant.HIDKey.From(devgrant.Resources(files))
	if err != nil {
		return fail("resource: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var granted string
	for _, f := range files {
		if f.Kind == devgrant.KindHidraw {
			granted = f.Node
		}
	}
	dev, err := back.Open(granted)
	if err != nil {
		return fail("open granted node: %v", err)
	}
	p := make([]byte, 16)
	if n, err := dev.ReadInput(ctx, p); err != nil {
		fmt.Printf("granted node: %v\n", err)
	} else {
		fmt.Printf("granted node: read %d bytes through the grant\n", n)
	}
	dev.Close()

	sdev, err := back.Open("/dev/hidraw0")
	if err != nil {
		return fail("open simulated: %v", err)
	}
	if n, err := sdev.ReadInput(ctx, p); err != nil {
		fmt.Printf("granted simulated: %v\n", err)
	} else if err := sdev.WriteOutput([]byte{0, 0x03}); err != nil {
		fmt.Printf("granted simulated: %v\n", err)
	} else {
		fmt.Printf("granted simulated: report %x, output written\n", p[:n])
	}
	sdev.Close()

	other := os.Getenv("DEVGRANT_OTHER")
	for name, node := range map[string]string{"granted by path": granted, "other by path": other} {
		f, err := os.OpenFile(node, os.O_RDWR, 0)
		switch {
		case err == nil:
			f.Close()
			fmt.Printf("%s: opened!\n", name)
		case errors.Is(err, fs.ErrPermission):
			fmt.Printf("%s: permission denied\n", name)
		default:
			fmt.Printf("%s: %v\n", name, err)
		}
	}
	if _, err := back.Open(other); errors.Is(err, devgrant.ErrNotGranted) {
		fmt.Printf("other by resource: %v\n", devgrant.ErrNotGranted)
	} else {
		fmt.Printf("other by resource: %v\n", err)
	}

	res := devgrant.Resources(files)
	if open, err := devgrant.SGKey.From(res); err != nil {
		fmt.Printf("granted sg: %v\n", err)
	} else if t, err := open("/dev/sg1"); err != nil {
		fmt.Printf("granted sg: %v\n", err)
	} else {
		q, err := scsi.NewDevice(t).Inquiry(ctx)
		fmt.Printf("granted sg: %s%v\n", q.Product, errOrEmpty(err))
		t.Close()
		_, err = open("/dev/sg0")
		fmt.Printf("other sg: %v\n", unwrapAll(err))
	}
	if b, err := devgrant.USBKey.From(res); err != nil {
		fmt.Printf("granted usb: %v\n", err)
	} else if d, err := b.Open(ctx, usb.Selector{Bus: 1, Address: 4}); err != nil {
		fmt.Printf("granted usb: %v\n", err)
	} else {
		bot, err := scsi.NewBOT(ctx, d)
		if err != nil {
			fmt.Printf("granted usb: %v\n", err)
		} else {
			q, err := scsi.NewDevice(bot).Inquiry(ctx)
			fmt.Printf("granted usb: %s over bulk-only transport%v\n", q.Product, errOrEmpty(err))
			bot.Close()
		}
		d.Close()
		_, err = b.Open(ctx, usb.Selector{Bus: 1, Address: 5})
		fmt.Printf("other usb: %v\n", unwrapAll(err))
	}
	for _, f := range files {
		f.File.Close()
	}
	return 0
}

func errOrEmpty(err error) string {
	if err != nil {
		return " (" + err.Error() + ")"
	}
	return ""
}

// unwrapAll is the innermost error: the sentinel, without the context.
func unwrapAll(err error) error {
	for err != nil {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
	return err
}
