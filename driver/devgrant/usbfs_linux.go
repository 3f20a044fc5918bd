package devgrant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/drvkit/drvkit/driver/usb"
)

// usbfs ioctls (<linux/usbdevice_fs.h>), pure Go. The direction bits are
// taken from request numbers x/sys/unix has for every architecture, since
// they differ between them (ppc, mips, sparc).
var (
	iocDirMask = uintptr(0xffffffff) &^ (0x3fff<<16 | 0xffff)
	iocR       = uintptr(unix.HIDIOCGRAWINFO) & iocDirMask
	iocW       = uintptr(unix.TUNSETIFF) & iocDirMask
	iocNone    = uintptr(unix.BLKRRPART) & iocDirMask

	usbdevfsControl         = iocU(iocR|iocW, 0, unsafe.Sizeof(usbdevfsCtrl{}))
	usbdevfsBulk            = iocU(iocR|iocW, 2, unsafe.Sizeof(usbdevfsBulkXfer{}))
	usbdevfsGetDriver       = iocU(iocW, 8, unsafe.Sizeof(usbdevfsGetdriver{}))
	usbdevfsClaimInterface  = iocU(iocR, 15, 4)
	usbdevfsReleaseIface    = iocU(iocR, 16, 4)
	usbdevfsIoctl           = iocU(iocR|iocW, 18, unsafe.Sizeof(usbdevfsIoctlArg{}))
	usbdevfsClearHalt       = iocU(iocR, 21, 4)
	usbdevfsDisconnect      = iocU(iocNone, 22, 0)
	usbdevfsConnect         = iocU(iocNone, 23, 0)
	usbdevfsDropPrivileges  = iocU(iocW, 30, 4)
	errDropPrivilegesNeeded = errors.New("kernel lacks USBDEVFS_DROP_PRIVILEGES (Linux 5.0)")
)

func iocU(dir, nr, size uintptr) uintptr { return dir | size<<16 | 'U'<<8 | nr }

type usbdevfsCtrl struct {
	RequestType, Request uint8
	Value, Index, Length uint16
	Timeout              uint32
	Data                 uintptr
}

type usbdevfsBulkXfer struct {
	Ep, Len, Timeout uint32
	Data             uintptr
}

type usbdevfsGetdriver struct {
	Interface uint32
	Driver    [256]byte
}

type usbdevfsIoctlArg struct {
	Ifno, IoctlCode int32
	Data            uintptr
}

func ioctlFile(f *os.File, req uintptr, arg unsafe.Pointer) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var r uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		for {
			r, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
			if errno != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return 0, usb.ErrClosed
	}
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func mapUsbfs(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESHUTDOWN):
		return fmt.Errorf("%w (%v)", usb.ErrNoDevice, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w (%v)", usb.ErrBusy, err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w (%v)", ErrNotGranted, err)
	case errors.Is(err, unix.ETIMEDOUT):
		return fmt.Errorf("%w (%v)", usb.ErrTimeout, err)
	case errors.Is(err, unix.EPIPE):
		return fmt.Errorf("%w (%v)", usb.ErrStall, err)
	case errors.Is(err, unix.EOVERFLOW):
		return fmt.Errorf("%w (%v)", usb.ErrOverflow, err)
	}
	return err
}

func kernelDriver(f *os.File, iface int) (string, error) {
	arg := usbdevfsGetdriver{Interface: uint32(iface)}
	if _, err := ioctlFile(f, usbdevfsGetDriver, unsafe.Pointer(&arg)); err != nil {
		if errors.Is(err, unix.ENODATA) {
			return "", nil
		}
		return "", mapUsbfs(err)
	}
	n := bytes.IndexByte(arg.Driver[:], 0)
	if n < 0 {
		n = len(arg.Driver)
	}
	return string(arg.Driver[:n]), nil
}

func usbfsIoctl(f *os.File, iface int, code uintptr) error {
	arg := usbdevfsIoctlArg{Ifno: int32(iface), IoctlCode: int32(code)}
	_, err := ioctlFile(f, usbdevfsIoctl, unsafe.Pointer(&arg))
	return err
}

func ifaceIoctl(f *os.File, req uintptr, iface int) error {
	v := uint32(iface)
	_, err := ioctlFile(f, req, unsafe.Pointer(&v))
	return err
}

// grantUsbfs opens the usbfs node of bus/addr twice: a control handle the
// daemon keeps (to read, detach and re-attach kernel drivers) and the
// handle the driver gets, on which the interface is claimed and whose
// privileges are then dropped to that interface: the driver can neither
// claim another interface, nor detach a kernel driver, nor reset the
// device. The detached driver is journaled before the detach.
func grantUsbfs(j *usb.Journal, bus, addr, iface int) (File, func() error, error) {
	node := USBNode(bus, addr)
	ctl, err := openNode(node)
	if err != nil {
		return File{}, nil, mapUsbfs(err)
	}
	g, err := openNode(node)
	if err != nil {
		ctl.Close()
		return File{}, nil, mapUsbfs(err)
	}
	// Kept until release: g's copy in the Grant is closed first.
	own, err := dupFile(g)
	if err != nil {
		ctl.Close()
		g.Close()
		return File{}, nil, err
	}
	undo := func(errs ...error) error {
		return errors.Join(append(errs, own.Close(), g.Close(), ctl.Close())...)
	}
	drv, err := kernelDriver(ctl, iface)
	if err != nil {
		return File{}, nil, undo(err)
	}
	if drv == "usbfs" {
		return File{}, nil, undo(fmt.Errorf("%w: interface %d claimed by another usbfs user", usb.ErrBusy, iface))
	}
	var entry *usb.JournalEntry
	if drv != "" {
		if j != nil {
			info, _ := readUsbfsInfo(ctl, bus, addr)
			e := usb.JournalEntry{Bus: bus, Address: addr, Vendor: info.Vendor, Product: info.Product, Interface: iface, Driver: drv}
			if err := j.Record(e); err != nil {
				return File{}, nil, undo(err)
			}
			entry = &e
		}
		if err := usbfsIoctl(ctl, iface, usbdevfsDisconnect); err != nil && !errors.Is(err, unix.ENODATA) {
			return File{}, nil, undo(fmt.Errorf("detach kernel driver %s: %w", drv, mapUsbfs(err)), forget(j, entry))
		}
	}
	reattach := func() error {
		if drv == "" {
			return nil
		}
		err := usbfsIoctl(ctl, iface, usbdevfsConnect)
		if err != nil && !errors.Is(mapUsbfs(err), usb.ErrNoDevice) {
			// Still detached: the journal keeps it for the next daemon.
			return fmt.Errorf("re-attach %s to interface %d: %w", drv, iface, mapUsbfs(err))
		}
		return forget(j, entry)
	}
	if err := ifaceIoctl(g, usbdevfsClaimInterface, iface); err != nil {
		return File{}, nil, undo(fmt.Errorf("claim interface %d: %w", iface, mapUsbfs(err)), reattach())
	}
	mask := uint32(1) << iface
	if iface >= 32 {
		mask = 0
	}
	if _, err := ioctlFile(g, usbdevfsDropPrivileges, unsafe.Pointer(&mask)); err != nil {
		// Without it the driver could claim other free interfaces of
		// the device: refuse rather than grant more than one interface.
		_ = ifaceIoctl(g, usbdevfsReleaseIface, iface)
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			err = errDropPrivilegesNeeded
		}
		return File{}, nil, undo(err, reattach())
	}
	release := func() error {
		// The claim belongs to the open file, which a driver process
		// that is somehow still alive would keep: release it from here,
		// which takes the interface away from such a driver too.
		err := ifaceIoctl(own, usbdevfsReleaseIface, iface)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(mapUsbfs(err), usb.ErrNoDevice) {
			err = fmt.Errorf("release interface %d: %w", iface, mapUsbfs(err))
		} else {
			err = nil
		}
		err = errors.Join(err, own.Close(), reattach())
		return errors.Join(err, ctl.Close())
	}
	return File{Resource: USBKey.Name(), Node: node, Kind: KindUsbfs, File: g}, release, nil
}

func forget(j *usb.Journal, e *usb.JournalEntry) error {
	if j == nil || e == nil {
		return nil
	}
	return j.Forget(*e)
}

// readUsbfsInfo reads a usbfs node's descriptors, with the active
// configuration from sysfs when it can be found.
func readUsbfsInfo(f *os.File, bus, addr int) (usb.DeviceInfo, error) {
	buf := make([]byte, 64<<10)
	var n int
	var rerr error
	rc, err := f.SyscallConn()
	if err != nil {
		return usb.DeviceInfo{}, err
	}
	if err := rc.Control(func(fd uintptr) { n, rerr = unix.Pread(int(fd), buf, 0) }); err != nil {
		return usb.DeviceInfo{}, err
	}
	if rerr != nil {
		return usb.DeviceInfo{}, mapUsbfs(rerr)
	}
	info, err := parseUSBDescriptors(buf[:n], activeConfig(bus, addr))
	info.Bus, info.Address = bus, addr
	return info, err
}

// activeConfig reads bConfigurationValue of the device from sysfs; 0 if
// it cannot be found (the first configuration is assumed).
func activeConfig(bus, addr int) int {
	ents, err := os.ReadDir("/sys/bus/usb/devices")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		dir := "/sys/bus/usb/devices/" + e.Name()
		if strings.Contains(e.Name(), ":") || readInt(dir+"/busnum") != bus || readInt(dir+"/devnum") != addr {
			continue
		}
		return readInt(dir + "/bConfigurationValue")
	}
	return 0
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// usbfsDev is a usb.Device on a granted usbfs descriptor.
type usbfsDev struct {
	f    *os.File
	node string
	info usb.DeviceInfo

	mu      sync.Mutex
	claimed map[int]bool
	closed  bool
}

var _ usb.Device = (*usbfsDev)(nil)

func openUsbfsDevice(f Received) (usb.Device, error) {
	op := "open " + f.Node
	var bus, addr int
	if _, err := fmt.Sscanf(f.Node, usbfsRoot+"/%d/%d", &bus, &addr); err != nil {
		return nil, &usb.OpError{Op: op, Err: fmt.Errorf("%w: node %q", ErrNotGranted, f.Node)}
	}
	d, err := dupFile(f.File)
	if err != nil {
		return nil, &usb.OpError{Op: op, Err: err}
	}
	info, err := readUsbfsInfo(d, bus, addr)
	if err != nil {
		d.Close()
		return nil, &usb.OpError{Op: op, Err: err}
	}
	return &usbfsDev{f: d, node: f.Node, info: info, claimed: map[int]bool{}}, nil
}

func (d *usbfsDev) Info() usb.DeviceInfo { return d.info }

func (d *usbfsDev) ClaimInterface(ctx context.Context, num, alt int) error {
	op := fmt.Sprintf("claim interface %d.%d", num, alt)
	if err := ifaceIoctl(d.f, usbdevfsClaimInterface, num); err != nil {
		return &usb.OpError{Op: op, Err: mapUsbfs(err)}
	}
	d.mu.Lock()
	d.claimed[num] = true
	d.mu.Unlock()
	return nil
}

func (d *usbfsDev) ReleaseInterface(num int) error {
	op := fmt.Sprintf("release interface %d", num)
	d.mu.Lock()
	claimed := d.claimed[num]
	delete(d.claimed, num)
	d.mu.Unlock()
	if !claimed {
		return &usb.OpError{Op: op, Err: usb.ErrNotClaimed}
	}
	if err := ifaceIoctl(d.f, usbdevfsReleaseIface, num); err != nil {
		return &usb.OpError{Op: op, Err: mapUsbfs(err)}
	}
	return nil
}

// timeoutMS is the usbfs timeout of a transfer: the context's deadline, or
// none. usbfs's synchronous transfers cannot be cancelled otherwise.
func timeoutMS(ctx context.Context) (uint32, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return 0, nil
	}
	ms := time.Until(dl).Milliseconds()
	if ms <= 0 {
		return 0, context.DeadlineExceeded
	}
	return uint32(min(ms, 1<<31)), nil
}

func (d *usbfsDev) bulk(ctx context.Context, kind string, ep uint8, buf []byte) (int, error) {
	op := xferName(kind, ep)
	to, err := timeoutMS(ctx)
	if err != nil {
		return 0, &usb.OpError{Op: op, Err: err}
	}
	x := usbdevfsBulkXfer{Ep: uint32(ep), Len: uint32(len(buf)), Timeout: to}
	var pin runtime.Pinner
	defer pin.Unpin()
	if len(buf) > 0 {
		pin.Pin(&buf[0])
		x.Data = uintptr(unsafe.Pointer(&buf[0]))
	}
	n, err := ioctlFile(d.f, usbdevfsBulk, unsafe.Pointer(&x))
	if err != nil {
		return 0, &usb.OpError{Op: op, Err: mapUsbfs(err)}
	}
	return n, nil
}

// BulkTransfer implements usb.Device (usbfs's BULK serves interrupt
// endpoints too).
func (d *usbfsDev) BulkTransfer(ctx context.Context, ep uint8, buf []byte) (int, error) {
	return d.bulk(ctx, "bulk", ep, buf)
}

func (d *usbfsDev) InterruptTransfer(ctx context.Context, ep uint8, buf []byte) (int, error) {
	return d.bulk(ctx, "interrupt", ep, buf)
}

func (d *usbfsDev) Control(ctx context.Context, rtype, req uint8, val, idx uint16, data []byte) (int, error) {
	op := fmt.Sprintf("control %#02x/%#02x", rtype, req)
	if len(data) > 0xffff {
		return 0, &usb.OpError{Op: op, Err: usb.ErrOverflow}
	}
	to, err := timeoutMS(ctx)
	if err != nil {
		return 0, &usb.OpError{Op: op, Err: err}
	}
	c := usbdevfsCtrl{RequestType: rtype, Request: req, Value: val, Index: idx, Length: uint16(len(data)), Timeout: to}
	var pin runtime.Pinner
	defer pin.Unpin()
	if len(data) > 0 {
		pin.Pin(&data[0])
		c.Data = uintptr(unsafe.Pointer(&data[0]))
	}
	n, err := ioctlFile(d.f, usbdevfsControl, unsafe.Pointer(&c))
	if err != nil {
		return 0, &usb.OpError{Op: op, Err: mapUsbfs(err)}
	}
	return n, nil
}

func (d *usbfsDev) ClearHalt(ctx context.Context, ep uint8) error {
	if err := ifaceIoctl(d.f, usbdevfsClearHalt, int(ep)); err != nil {
		return &usb.OpError{Op: fmt.Sprintf("clear halt %#02x", ep), Err: mapUsbfs(err)}
	}
	return nil
}

// Detached is empty: the daemon detached the kernel driver.
func (d *usbfsDev) Detached() []usb.KernelDriver { return nil }

func (d *usbfsDev) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return &usb.OpError{Op: "close " + d.node, Err: usb.ErrClosed}
	}
	d.closed = true
	d.mu.Unlock()
	return d.f.Close()
}
