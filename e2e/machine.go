//go:build linux

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drvkit/drvkit/e2e/agentproto"
	"github.com/drvkit/drvkit/internal/qmp"
)

// Device and node names of the machine's hotpluggable hardware.
const (
	USBStickID = "usbstick" // usb-storage on xhci.0, 46f4:0001
	USBNode    = "usbdisk"  // its -blockdev node
	SCSIDiskID = "scsihd"   // scsi-hd on scsi0.0
	SCSINode   = "scsidisk" // its -blockdev node
	USBVendor  = "46f4"     // QEMU's usb-storage
	USBProduct = "0001"
)

// Config describes a machine. The zero value of every field but Assets is
// a sensible default.
type Config struct {
	Assets    *Assets
	Name      string               // names the logs; default "machine"
	Script    []agentproto.Request // run by the agent at boot (drvkit.e2e=)
	Append    string               // more kernel command line
	USBSerial string               // default "DRVKIT-E2E-1"
	DiskMiB   int                  // size of each disk image, default 16
	MemMiB    int                  // default 512
	LogDir    string               // default <cache>/logs
}

// Machine is a running guest.
type Machine struct {
	QMP     *qmp.Client
	Agent   *Agent
	Console *Console
	Hello   agentproto.Hello

	// PeakRSS is QEMU's peak resident memory (VmHWM), read when the
	// machine is closed; 0 if it had already exited.
	PeakRSS int64

	LogPath   string        // serial console (and QEMU's stderr)
	TracePath string        // every agent message
	BootTime  time.Duration // QEMU started → agent ready

	cfg       Config
	dir       string
	cmd       *exec.Cmd
	logs      []*os.File
	exited    chan struct{}
	exitErr   error
	closeOnce sync.Once
}

var readyRE = regexp.MustCompile(`^E2E (ready)$|^E2E (boot|agent|init) FAIL (.*)$`)

// Boot starts QEMU and waits until the agent answers. ctx bounds the boot.
// On error everything started is torn down, and the returned machine (if
// not nil) still names the logs and holds the console output.
func Boot(ctx context.Context, cfg Config) (m *Machine, err error) {
	if cfg.Assets == nil {
		return nil, errors.New("e2e: Config.Assets is nil")
	}
	if cfg.Name == "" {
		cfg.Name = "machine"
	}
	if cfg.USBSerial == "" {
		cfg.USBSerial = "DRVKIT-E2E-1"
	}
	if cfg.DiskMiB <= 0 {
		cfg.DiskMiB = 16
	}
	if cfg.MemMiB <= 0 {
		cfg.MemMiB = 512
	}
	if cfg.LogDir == "" {
		cfg.LogDir = filepath.Join(cfg.Assets.Cache, "logs")
	}
	m = &Machine{cfg: cfg, exited: make(chan struct{})}
	if err := m.boot(ctx); err != nil {
		m.Close()
		return m, err
	}
	return m, nil
}

// boot does Boot's work; on error the caller closes m.
func (m *Machine) boot(ctx context.Context) (err error) {
	cfg := m.cfg
	// Socket paths must stay under 108 bytes: a short temporary directory,
	// not the cache.
	removeStaleDirs()
	if m.dir, err = os.MkdirTemp("", fmt.Sprintf("drvkit-e2e-%d-", os.Getpid())); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return err
	}
	base := filepath.Join(cfg.LogDir, strings.NewReplacer("/", "_", " ", "_").Replace(cfg.Name))
	m.LogPath, m.TracePath = base+".serial.log", base+".agent.log"
	serial, err := os.Create(m.LogPath)
	if err != nil {
		return err
	}
	trace, err := os.Create(m.TracePath)
	if err != nil {
		serial.Close()
		return err
	}
	m.logs = []*os.File{serial, trace}
	m.Console = newConsole(serial)

	for _, img := range []string{"usb.img", "scsi.img"} {
		f, err := os.Create(filepath.Join(m.dir, img))
		if err != nil {
			return err
		}
		err = f.Truncate(int64(cfg.DiskMiB) << 20)
		f.Close()
		if err != nil {
			return err
		}
	}
	qmpSock, ctlSock := filepath.Join(m.dir, "qmp.sock"), filepath.Join(m.dir, "ctl.sock")
	appendLine := "console=ttyS0 quiet panic=-1 " + cfg.Append
	if len(cfg.Script) > 0 {
		b, err := json.Marshal(cfg.Script)
		if err != nil {
			return err
		}
		appendLine += " drvkit.e2e=" + base64.RawURLEncoding.EncodeToString(b)
	}
	if len(appendLine) > 2000 {
		return fmt.Errorf("e2e: kernel command line too long (%d bytes; x86 allows 2048)", len(appendLine))
	}
	args := []string{
		"-accel", "tcg", "-m", fmt.Sprint(cfg.MemMiB), "-smp", "1",
		"-nodefaults", "-display", "none", "-no-reboot",
		"-serial", "stdio",
		"-chardev", "socket,id=ctl,path=" + ctlSock + ",server=on,wait=off",
		"-serial", "chardev:ctl",
		"-qmp", "unix:" + qmpSock + ",server=on,wait=off",
		"-kernel", cfg.Assets.Kernel, "-initrd", cfg.Assets.Initrd,
		"-append", strings.TrimSpace(appendLine),
		"-device", "qemu-xhci,id=xhci",
		"-blockdev", blockdev(USBNode, filepath.Join(m.dir, "usb.img")),
		"-device", "usb-storage,bus=xhci.0,drive=" + USBNode + ",id=" + USBStickID + ",serial=" + cfg.USBSerial,
		"-device", "virtio-scsi-pci,id=scsi0",
		"-blockdev", blockdev(SCSINode, filepath.Join(m.dir, "scsi.img")),
		"-device", "scsi-hd,bus=scsi0.0,drive=" + SCSINode + ",id=" + SCSIDiskID,
	}
	fmt.Fprintf(serial, "# %s %s\n", cfg.Assets.QEMU, strings.Join(args, " "))
	m.cmd = exec.Command(cfg.Assets.QEMU, args...)
	m.cmd.Stdout, m.cmd.Stderr = m.Console, m.Console
	// QEMU must not outlive the test binary, even one killed by a timeout.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("e2e: starting QEMU: %w", err)
	}
	go func() {
		m.exitErr = m.cmd.Wait()
		m.Console.close()
		close(m.exited)
	}()

	qconn, err := m.dial(ctx, qmpSock)
	if err != nil {
		return err
	}
	if m.QMP, err = qmp.NewClient(ctx, qconn); err != nil {
		return err
	}
	conn, err := m.dial(ctx, ctlSock)
	if err != nil {
		return err
	}
	m.Agent = newAgent(conn, trace)

	line, err := m.Console.WaitLine(ctx, 0, readyRE)
	if err != nil {
		return err
	}
	if line[1] != "ready" {
		return fmt.Errorf("e2e: guest failed to boot: %s: %s", line[2], line[3])
	}
	if err := m.Agent.Call(ctx, agentproto.OpHello, nil, &m.Hello); err != nil {
		return err
	}
	if err := m.Agent.Call(ctx, agentproto.OpSubscribe, nil, nil); err != nil {
		return err
	}
	m.BootTime = time.Since(t0)
	return nil
}

// peakRSS reads VmHWM of a live process, in bytes.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

// removeStaleDirs removes the temporary directories (disk images, sockets)
// of test processes that died without cleaning up, e.g. on a test timeout.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "drvkit-e2e-*-*"))
	for _, d := range dirs {
		pid, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(d), "drvkit-e2e-"), "-")
		if !ok || pid == "" || strings.Trim(pid, "0123456789") != "" {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); errors.Is(err, os.ErrNotExist) {
			os.RemoveAll(d)
		}
	}
}

func blockdev(node, file string) string {
	return "driver=raw,node-name=" + node + ",file.driver=file,file.filename=" + file
}

// dial connects to one of QEMU's server sockets. QEMU binds before it
// listens, so the path can exist and still refuse for a moment: retry.
func (m *Machine) dial(ctx context.Context, path string) (net.Conn, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("e2e: connecting to QEMU's %s: %w", filepath.Base(path), err)
		}
		select {
		case <-tick.C:
		case <-m.exited:
			return nil, fmt.Errorf("e2e: QEMU exited before serving %s: %v", filepath.Base(path), m.exitErr)
		case <-ctx.Done():
			return nil, fmt.Errorf("e2e: connecting to QEMU's %s: %w (last: %v)", filepath.Base(path), ctx.Err(), err)
		}
	}
}

// Exited is closed when QEMU has exited.
func (m *Machine) Exited() <-chan struct{} { return m.exited }

// Poweroff asks the guest to power off and waits for QEMU to exit.
func (m *Machine) Poweroff(ctx context.Context) error {
	if err := m.Agent.Call(ctx, agentproto.OpPoweroff, nil, nil); err != nil {
		return err
	}
	select {
	case <-m.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("e2e: waiting for QEMU to exit after poweroff: %w", ctx.Err())
	}
}

// Close kills QEMU (if it still runs), waits for it and removes the
// temporary files; the logs stay.
func (m *Machine) Close() error {
	m.closeOnce.Do(func() {
		if m.Agent != nil {
			m.Agent.close()
		}
		if m.QMP != nil {
			m.QMP.Close()
		}
		if m.cmd != nil && m.cmd.Process != nil {
			m.PeakRSS = peakRSS(m.cmd.Process.Pid)
			m.cmd.Process.Kill()
			<-m.exited
		}
		for _, f := range m.logs {
			f.Close()
		}
		if m.dir != "" {
			os.RemoveAll(m.dir)
		}
	})
	return nil
}

// UnplugUSB removes the usb-storage stick, as pulling it out would, and
// waits until QEMU reports it deleted.
func (m *Machine) UnplugUSB(ctx context.Context) error {
	return m.QMP.DeviceDel(ctx, USBStickID)
}

// PlugUSB plugs the stick back in with serial (default: the configured one),
// retrying while QEMU still holds the block node. It returns the attempts.
func (m *Machine) PlugUSB(ctx context.Context, serial string) (int, error) {
	if serial == "" {
		serial = m.cfg.USBSerial
	}
	return m.QMP.DeviceAdd(ctx, map[string]any{
		"driver": "usb-storage", "bus": "xhci.0", "drive": USBNode, "id": USBStickID, "serial": serial,
	})
}

// UnplugSCSI removes the scsi-hd disk.
func (m *Machine) UnplugSCSI(ctx context.Context) error {
	return m.QMP.DeviceDel(ctx, SCSIDiskID)
}

// PlugSCSI plugs the scsi-hd disk back in.
func (m *Machine) PlugSCSI(ctx context.Context) (int, error) {
	return m.QMP.DeviceAdd(ctx, map[string]any{
		"driver": "scsi-hd", "bus": "scsi0.0", "drive": SCSINode, "id": SCSIDiskID,
	})
}

// AddDisk creates a sizeMiB image and a -blockdev node for it at run time
// (blockdev-add), for a device hot-added with DeviceAdd.
func (m *Machine) AddDisk(ctx context.Context, node string, sizeMiB int) error {
	img := filepath.Join(m.dir, node+".img")
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	f.Close()
	if err != nil {
		return err
	}
	_, err = m.QMP.Execute(ctx, "blockdev-add", map[string]any{
		"driver": "raw", "node-name": node,
		"file": map[string]any{"driver": "file", "filename": img},
	})
	return err
}

// AddUSBStick hot-plugs a new usb-storage stick on node (see AddDisk).
func (m *Machine) AddUSBStick(ctx context.Context, id, node, serial string) error {
	_, err := m.QMP.DeviceAdd(ctx, map[string]any{
		"driver": "usb-storage", "bus": "xhci.0", "drive": node, "id": id, "serial": serial,
	})
	return err
}

// AddSCSIDisk hot-plugs a new scsi-hd at LUN lun of target 0 on node.
func (m *Machine) AddSCSIDisk(ctx context.Context, id, node string, lun int) error {
	_, err := m.QMP.DeviceAdd(ctx, map[string]any{
		"driver": "scsi-hd", "bus": "scsi0.0", "drive": node, "id": id, "scsi-id": 0, "lun": lun,
	})
	return err
}

// StartForTest boots a machine for t: it is closed when the test ends, and
// when the test failed the console's tail and the log paths are printed.
func StartForTest(t testing.TB, ctx context.Context, cfg Config) *Machine {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = t.Name()
	}
	m, err := Boot(ctx, cfg)
	if err != nil {
		if m != nil {
			reportTail(t, m) // Boot closed it: the log is complete
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close()
		if t.Failed() {
			reportTail(t, m)
		}
	})
	t.Logf("booted in %v (kernel %s, %d modules)", m.BootTime.Round(time.Millisecond), m.Hello.Kernel, len(m.Hello.Modules))
	return m
}

func reportTail(t testing.TB, m *Machine) {
	t.Helper()
	if m.Console == nil {
		return
	}
	t.Logf("serial log %s, agent log %s; console tail:\n%s",
		m.LogPath, m.TracePath, strings.Join(m.Console.Tail(40), "\n"))
}
