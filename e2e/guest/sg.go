//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/drvkit/drvkit/e2e/agentproto"
	"golang.org/x/sys/unix"
)

// sgIOHdr is struct sg_io_hdr from <scsi/sg.h> (amd64 layout).
type sgIOHdr struct {
	interfaceID    int32
	dxferDirection int32
	cmdLen         uint8
	mxSbLen        uint8
	iovecCount     uint16
	dxferLen       uint32
	dxferp         unsafe.Pointer
	cmdp           unsafe.Pointer
	sbp            unsafe.Pointer
	timeout        uint32
	flags          uint32
	packID         int32
	usrPtr         unsafe.Pointer
	status         uint8
	maskedStatus   uint8
	msgStatus      uint8
	sbLenWr        uint8
	hostStatus     uint16
	driverStatus   uint16
	resid          int32
	duration       uint32
	info           uint32
}

const (
	sgIO           = 0x2285
	sgDxferFromDev = -3
	sgInfoOKMask   = 0x1
)

// inquiry sends a standard INQUIRY through SG_IO.
func inquiry(dev string) (*agentproto.Inquiry, error) {
	if !strings.HasPrefix(dev, "/dev/sg") {
		return nil, fmt.Errorf("inquiry: %q is not an sg node", dev)
	}
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("inquiry: %w", err)
	}
	defer f.Close()
	data := make([]byte, 96)
	sense := make([]byte, 32)
	cdb := []byte{0x12, 0, 0, 0, byte(len(data)), 0}
	h := sgIOHdr{
		interfaceID: 'S', dxferDirection: sgDxferFromDev,
		cmdLen: uint8(len(cdb)), mxSbLen: uint8(len(sense)),
		dxferLen: uint32(len(data)), dxferp: unsafe.Pointer(&data[0]),
		cmdp: unsafe.Pointer(&cdb[0]), sbp: unsafe.Pointer(&sense[0]),
		timeout: 5000,
	}
	t0 := time.Now()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, sgIO, uintptr(unsafe.Pointer(&h)))
		if e != 0 {
			ioErr = e
		}
	})
	runtime.KeepAlive(data)
	runtime.KeepAlive(cdb)
	runtime.KeepAlive(sense)
	if err == nil {
		err = ioErr
	}
	if err != nil {
		return nil, fmt.Errorf("inquiry %s: SG_IO: %w", dev, err)
	}
	if h.info&sgInfoOKMask != 0 || h.status != 0 || h.hostStatus != 0 || h.driverStatus != 0 {
		return nil, fmt.Errorf("inquiry %s: status %#x host %#x driver %#x sense % x",
			dev, h.status, h.hostStatus, h.driverStatus, sense[:h.sbLenWr])
	}
	q, err := parseInquiry(data[:len(data)-int(h.resid)])
	if err != nil {
		return nil, fmt.Errorf("inquiry %s: %w", dev, err)
	}
	q.Device = dev
	q.Ms = float64(time.Since(t0).Microseconds()) / 1000
	return q, nil
}

var errShortInquiry = errors.New("INQUIRY data shorter than 36 bytes")

// parseInquiry decodes standard INQUIRY data (SPC-4 6.6.2).
func parseInquiry(b []byte) (*agentproto.Inquiry, error) {
	if len(b) < 36 {
		return nil, fmt.Errorf("%w (%d)", errShortInquiry, len(b))
	}
	trim := func(p []byte) string { return strings.TrimRight(string(p), " \x00") }
	return &agentproto.Inquiry{
		PeripheralType: int(b[0] & 0x1f),
		Vendor:         trim(b[8:16]),
		Product:        trim(b[16:32]),
		Revision:       trim(b[32:36]),
	}, nil
}

// listSG lists /sys/class/scsi_generic and the SCSI device behind each node.
func listSG() ([]agentproto.SGDevice, error) {
	ents, err := os.ReadDir("/sys/class/scsi_generic")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []agentproto.SGDevice
	for _, e := range ents {
		base := "/sys/class/scsi_generic/" + e.Name() + "/device"
		real, err := filepath.EvalSymlinks(base)
		if err != nil {
			continue // removed while we looked
		}
		rd := func(name string) string {
			b, _ := os.ReadFile(base + "/" + name)
			return strings.TrimSpace(string(b))
		}
		typ, _ := strconv.Atoi(rd("type"))
		out = append(out, agentproto.SGDevice{
			Dev: "/dev/" + e.Name(), HCTL: filepath.Base(real),
			Vendor: rd("vendor"), Model: rd("model"), Type: typ, SysDev: real,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dev < out[j].Dev })
	return out, nil
}
