package scsi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func TestSGIOHdrSize(t *testing.T) {
	want := uintptr(64)
	if unsafe.Sizeof(uintptr(0)) == 8 {
		want = 88
	}
	require.Equal(t, want, unsafe.Sizeof(sgIOHdr{}))
}

// TestSGIOHdrLayoutMatchesKernelHeader compiles a C program against
// <scsi/sg.h> and compares every field offset with the Go struct.
func TestSGIOHdrLayoutMatchesKernelHeader(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("SKIPPED: no C compiler; the fixed-size check still ran")
	}
	if _, err := os.Stat("/usr/include/scsi/sg.h"); err != nil {
		t.Skip("SKIPPED: /usr/include/scsi/sg.h missing (install libc6-dev)")
	}
	fields := []struct {
		c   string
		go_ uintptr
	}{
		{"interface_id", unsafe.Offsetof(sgIOHdr{}.InterfaceID)},
		{"dxfer_direction", unsafe.Offsetof(sgIOHdr{}.DxferDirection)},
		{"cmd_len", unsafe.Offsetof(sgIOHdr{}.CmdLen)},
		{"mx_sb_len", unsafe.Offsetof(sgIOHdr{}.MxSbLen)},
		{"iovec_count", unsafe.Offsetof(sgIOHdr{}.IovecCount)},
		{"dxfer_len", unsafe.Offsetof(sgIOHdr{}.DxferLen)},
		{"dxferp", unsafe.Offsetof(sgIOHdr{}.Dxferp)},
		{"cmdp", unsafe.Offsetof(sgIOHdr{}.Cmdp)},
		{"sbp", unsafe.Offsetof(sgIOHdr{}.Sbp)},
		{"timeout", unsafe.Offsetof(sgIOHdr{}.Timeout)},
		{"flags", unsafe.Offsetof(sgIOHdr{}.Flags)},
		{"pack_id", unsafe.Offsetof(sgIOHdr{}.PackID)},
		{"usr_ptr", unsafe.Offsetof(sgIOHdr{}.UsrPtr)},
		{"status", unsafe.Offsetof(sgIOHdr{}.Status)},
		{"masked_status", unsafe.Offsetof(sgIOHdr{}.MaskedStatus)},
		{"msg_status", unsafe.Offsetof(sgIOHdr{}.MsgStatus)},
		{"sb_len_wr", unsafe.Offsetof(sgIOHdr{}.SbLenWr)},
		{"host_status", unsafe.Offsetof(sgIOHdr{}.HostStatus)},
		{"driver_status", unsafe.Offsetof(sgIOHdr{}.DriverStatus)},
		{"resid", unsafe.Offsetof(sgIOHdr{}.Resid)},
		{"duration", unsafe.Offsetof(sgIOHdr{}.Duration)},
		{"info", unsafe.Offsetof(sgIOHdr{}.Info)},
	}
	var src strings.Builder
	src.WriteString("#include <stdio.h>\n#include <stddef.h>\n#include <scsi/sg.h>\nint main(void){\n")
	src.WriteString(`printf("size %zu\n", sizeof(sg_io_hdr_t));` + "\n")
	fmt.Fprintf(&src, "printf(\"SG_IO %%d\\n\", SG_IO);\nprintf(\"SG_GET_VERSION_NUM %%d\\n\", SG_GET_VERSION_NUM);\n")
	for _, f := range fields {
		fmt.Fprintf(&src, "printf(\"%s %%zu\\n\", offsetof(sg_io_hdr_t, %s));\n", f.c, f.c)
	}
	src.WriteString("return 0;}\n")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "l.c"), []byte(src.String()), 0o644))
	out, err := exec.Command(cc, "-o", filepath.Join(dir, "l"), filepath.Join(dir, "l.c")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(filepath.Join(dir, "l")).Output()
	require.NoError(t, err)
	got := map[string]uint64{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, " ")
		n, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err)
		got[k] = n
	}
	require.Equal(t, uint64(unsafe.Sizeof(sgIOHdr{})), got["size"])
	require.Equal(t, uint64(sgIO), got["SG_IO"])
	require.Equal(t, uint64(sgGetVersionNum), got["SG_GET_VERSION_NUM"])
	for _, f := range fields {
		require.Equal(t, uint64(f.go_), got[f.c], "offset of %s", f.c)
	}
}

func TestOpenSGRejectsNonSG(t *testing.T) {
	_, err := OpenSG("/dev/null")
	require.ErrorIs(t, err, ErrNotSG)
	_, err = OpenSG("/dev/sg-drvkit-does-not-exist")
	require.ErrorIs(t, err, ErrNoDevice)
}

func TestHostDriverStatus(t *testing.T) {
	tests := []struct {
		host, driver uint16
		is           error
	}{
		{hostNoConnect, 0, ErrNoDevice},
		{hostBadTarget, 0, ErrNoDevice},
		{hostTimeOut, 0, ErrTimeout},
		{0, driverTimeout, ErrTimeout},
		{hostBusBusy, 0, ErrBusy},
		{hostTransportDisrupted, 0, ErrBusy},
		{hostError, 0, ErrTransport},
	}
	for _, tt := range tests {
		err := hostDriverError(tt.host, tt.driver)
		require.ErrorIs(t, err, tt.is, "%v", err)
	}
	require.NoError(t, hostDriverError(0, driverSense))
	require.NoError(t, hostDriverError(0, 0))
	require.NotErrorIs(t, hostDriverError(hostError, 0), ErrNoDevice)
	require.Equal(t, "host status 0x01 (DID_NO_CONNECT), driver status 0x00", hostDriverError(1, 0).Error())
}

// sgScratchEnv names sg nodes whose medium TestSGReal may overwrite, comma
// separated (the QEMU end-to-end run passes its throwaway disks). A listed
// node must exist and be a disk: a run that names one cannot skip.
const sgScratchEnv = "DRVKIT_SG_SCRATCH"

// TestSGReal drives the SG_IO transport on every /dev/sg* node there is:
// INQUIRY, and on disks TEST UNIT READY, READ CAPACITY(10) and (16), block 0
// by READ(10) and READ(16), an out-of-range READ that must come back as a
// typed ILLEGAL REQUEST, and REQUEST SENSE. On the nodes listed in
// DRVKIT_SG_SCRATCH it also writes: WRITE(10) and WRITE(16) at the end of
// the medium, read back with the other CDB size, out-of-range WRITEs
// refused without touching the medium, SYNCHRONIZE CACHE, and the original
// blocks put back. The QEMU end-to-end run (TestColdplug) runs it on the
// guest's virtio-scsi disk and usb-storage stick with both listed.
func TestSGReal(t *testing.T) {
	scratch := map[string]bool{}
	for _, n := range strings.Split(os.Getenv(sgScratchEnv), ",") {
		if n = strings.TrimSpace(n); n != "" {
			scratch[n] = true
		}
	}
	nodes, _ := filepath.Glob("/dev/sg[0-9]*")
	for n := range scratch {
		require.Contains(t, nodes, n, "%s names %s, which does not exist here", sgScratchEnv, n)
	}
	if len(nodes) == 0 {
		t.Skip("SKIPPED: no /dev/sg* node on this machine; the real SG_IO path runs in the QEMU end-to-end test (TestColdplug)")
	}
	for _, n := range nodes {
		t.Run(filepath.Base(n), func(t *testing.T) { sgReal(t, n, scratch[n]) })
	}
}

func sgReal(t *testing.T, path string, scratch bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	sg, err := OpenSG(path)
	require.NoError(t, err)
	require.GreaterOrEqual(t, sg.Version(), sgMinVersion)
	d := NewDevice(sg)
	defer func() { require.NoError(t, d.Close()) }()
	inq, err := d.Inquiry(ctx)
	require.NoError(t, err)
	t.Logf("%s: INQUIRY: type %d vendor %q product %q revision %q (sg driver %d)", path, inq.Type, inq.Vendor, inq.Product, inq.Revision, sg.Version())
	if inq.Type != TypeDisk {
		require.False(t, scratch, "%s names %s, a peripheral of type %d, not a disk", sgScratchEnv, path, inq.Type)
		return
	}
	// The first command after attach may report a unit attention.
	if err := d.TestUnitReady(ctx); err != nil {
		require.ErrorIs(t, err, ErrUnitAttention)
		require.NoError(t, d.TestUnitReady(ctx))
	}
	c, err := d.ReadCapacity(ctx)
	require.NoError(t, err)
	require.NotZero(t, c.BlockSize)
	bs := int(c.BlockSize)
	last := c.LastLBA
	t.Logf("%s: READ CAPACITY: %d blocks of %d bytes", path, c.Blocks(), c.BlockSize)

	// Some USB bridges reject 16-byte CDBs; a scratch disk must take them.
	tolerate16 := func(op string, err error) bool {
		if err != nil && !scratch && errors.Is(err, ErrIllegalRequest) {
			t.Logf("%s: %s rejected, as some USB bridges do: %v", path, op, err)
			return true
		}
		require.NoError(t, err)
		return false
	}
	buf := make([]byte, 32)
	res, err := d.do(ctx, "READ CAPACITY(16)", &Command{CDB: ReadCapacity16CDB(32), Dir: DirIn, Data: buf})
	if !tolerate16("READ CAPACITY(16)", err) {
		c16, err := ParseReadCapacity16(buf[:32-clampResid(res.Residual, 32)])
		require.NoError(t, err)
		require.Equal(t, last, c16.LastLBA, "READ CAPACITY(10) and (16) agree")
		require.Equal(t, c.BlockSize, c16.BlockSize)
	}

	// Block 0 through Device (READ(10) at this size) and through READ(16).
	b10 := make([]byte, bs)
	n, err := d.Read(ctx, 0, b10)
	require.NoError(t, err)
	require.Equal(t, bs, n)
	b16 := make([]byte, bs)
	res, err = d.do(ctx, "READ(16)", &Command{CDB: Read16CDB(0, 1), Dir: DirIn, Data: b16})
	if !tolerate16("READ(16)", err) {
		require.Zero(t, res.Residual)
		require.Equal(t, b10, b16, "READ(10) and READ(16) of block 0 agree")
	}

	// One block past the end: the target's sense, typed.
	past := rwCDB(t, false, last+1, 1)
	_, err = d.do(ctx, "READ", &Command{CDB: past, Dir: DirIn, Data: make([]byte, bs)})
	requireOutOfRange(t, err)
	// The sense came back with the command (autosense). A REQUEST SENSE
	// right after it may still return it: QEMU's scsi-disk keeps a unit's
	// last sense until its next command, while Linux's usb-storage has
	// already fetched it with its own REQUEST SENSE. After a good command
	// there is nothing left to report.
	s, err := d.RequestSense(ctx)
	require.NoError(t, err)
	if s.Key != SenseNoSense {
		require.Equal(t, SenseIllegalRequest, s.Key, "REQUEST SENSE right after the failed READ: %+v", s)
		require.Equal(t, uint8(0x21), s.ASC, "%+v", s)
	}
	t.Logf("%s: REQUEST SENSE right after the out-of-range READ: %v %02xh/%02xh", path, s.Key, s.ASC, s.ASCQ)
	require.NoError(t, d.TestUnitReady(ctx))
	s, err = d.RequestSense(ctx)
	require.NoError(t, err)
	require.Equal(t, SenseNoSense, s.Key, "REQUEST SENSE after a good TEST UNIT READY: %+v", s)
	// Device refuses it before sending anything.
	_, err = d.Read(ctx, last+1, b10)
	require.ErrorIs(t, err, ErrInvalidRequest)

	if !scratch {
		t.Logf("sgreal: %s read-only checks passed in %v (not in %s: no WRITE)", path, time.Since(t0).Round(time.Millisecond), sgScratchEnv)
		return
	}
	require.GreaterOrEqual(t, last, uint64(3), "a scratch disk needs 4 blocks")
	require.LessOrEqual(t, last, uint64(MaxLBA10), "a scratch disk small enough for 10-byte CDBs")

	// The last four blocks: kept, overwritten, and put back at the end.
	first := last - 3
	orig := make([]byte, 4*bs)
	_, err = d.Read(ctx, first, orig)
	require.NoError(t, err)
	run := time.Now().UnixNano()
	pattern := func(lba uint64) []byte {
		b := make([]byte, 0, bs+64)
		for len(b) < bs {
			b = fmt.Appendf(b, "drvkit TestSGReal %s lba %d run %d|", path, lba, run)
		}
		return b[:bs]
	}

	// WRITE(10) two blocks, read back by READ(16).
	w10 := append(pattern(first), pattern(first+1)...)
	_, err = d.do(ctx, "WRITE(10)", &Command{CDB: rw10CDB(t, true, first, 2), Dir: DirOut, Data: w10})
	require.NoError(t, err)
	got := make([]byte, 2*bs)
	res, err = d.do(ctx, "READ(16)", &Command{CDB: Read16CDB(first, 2), Dir: DirIn, Data: got})
	require.NoError(t, err)
	require.Zero(t, res.Residual)
	require.Equal(t, w10, got, "READ(16) returns what WRITE(10) wrote")

	// WRITE(16) the last block, read back by READ(10).
	w16 := pattern(last)
	_, err = d.do(ctx, "WRITE(16)", &Command{CDB: Write16CDB(last, 1), Dir: DirOut, Data: w16})
	require.NoError(t, err)
	got = got[:bs]
	res, err = d.do(ctx, "READ(10)", &Command{CDB: rw10CDB(t, false, last, 1), Dir: DirIn, Data: got})
	require.NoError(t, err)
	require.Zero(t, res.Residual)
	require.Equal(t, w16, got, "READ(10) returns what WRITE(16) wrote")

	// WRITEs past the end, and straddling it, are refused and change nothing.
	_, err = d.do(ctx, "WRITE(16)", &Command{CDB: Write16CDB(last+1, 1), Dir: DirOut, Data: pattern(last + 1)})
	requireOutOfRange(t, err)
	_, err = d.do(ctx, "WRITE(10)", &Command{CDB: rw10CDB(t, true, last, 2), Dir: DirOut, Data: append(pattern(0), pattern(0)...)})
	requireOutOfRange(t, err)
	require.NoError(t, d.SynchronizeCache(ctx))

	// All four blocks in one READ through Device, as drivers read.
	all := make([]byte, 4*bs)
	n, err = d.Read(ctx, first, all)
	require.NoError(t, err)
	require.Equal(t, 4*bs, n)
	require.Equal(t, w10, all[:2*bs])
	require.Equal(t, orig[2*bs:3*bs], all[2*bs:3*bs], "block %d was not written", last-1)
	require.Equal(t, w16, all[3*bs:], "the refused WRITEs left the last block alone")

	require.NoError(t, d.Write(ctx, first, orig))
	_, err = d.Read(ctx, first, all)
	require.NoError(t, err)
	require.Equal(t, orig, all, "the original blocks are back")
	t.Logf("sgreal: %s scratch LBAs %d-%d: WRITE(10)->READ(16), WRITE(16)->READ(10), out-of-range READ/WRITE -> ILLEGAL REQUEST 21h/00h, SYNCHRONIZE CACHE, restored: verified in %v",
		path, first, last, time.Since(t0).Round(time.Millisecond))
}

// rwCDB is a READ or WRITE CDB for lba, 10 bytes when it fits.
func rwCDB(t *testing.T, write bool, lba uint64, blocks uint32) []byte {
	if lba+uint64(blocks)-1 > MaxLBA10 {
		if write {
			return Write16CDB(lba, blocks)
		}
		return Read16CDB(lba, blocks)
	}
	return rw10CDB(t, write, lba, blocks)
}

func rw10CDB(t *testing.T, write bool, lba uint64, blocks uint32) []byte {
	f := Read10CDB
	if write {
		f = Write10CDB
	}
	cdb, err := f(lba, blocks)
	require.NoError(t, err)
	return cdb
}

// requireOutOfRange checks the sense SBC prescribes for an LBA past the
// end: ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
func requireOutOfRange(t *testing.T, err error) {
	t.Helper()
	require.ErrorIs(t, err, ErrIllegalRequest)
	var se *SenseError
	require.ErrorAs(t, err, &se)
	require.Equal(t, uint8(0x21), se.ASC, "%v", err)
	require.Equal(t, uint8(0x00), se.ASCQ, "%v", err)
}

// TestSGExecuteIoctlPath drives Execute's pinning and ioctl path on a
// descriptor that is not sg (the version check bypassed): the kernel's
// ENOTTY must come back as an error, not a crash or a fake success.
func TestSGExecuteIoctlPath(t *testing.T) {
	f, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	require.NoError(t, err)
	rc, err := f.SyscallConn()
	require.NoError(t, err)
	s := &SG{path: "/dev/null", f: f, rc: rc}
	buf := make([]byte, 512)
	cdb, _ := Read10CDB(0, 1)
	_, err = s.Execute(context.Background(), &Command{CDB: cdb, Dir: DirIn, Data: buf})
	require.ErrorContains(t, err, "inappropriate ioctl")
	require.NoError(t, s.Close())
	_, err = s.Execute(context.Background(), &Command{CDB: cdb, Dir: DirIn, Data: buf})
	require.ErrorIs(t, err, ErrClosed)
	_, err = s.Execute(context.Background(), &Command{})
	require.ErrorIs(t, err, ErrInvalidRequest)
}

// SGFromFile checks the node as OpenSG does, on a duplicate.
func TestSGFromFileRejectsNonSG(t *testing.T) {
	f, err := os.Open("/dev/null")
	require.NoError(t, err)
	defer f.Close()
	_, err = SGFromFile(f, "/dev/null")
	require.ErrorIs(t, err, ErrNotSG)
	_, err = f.Stat()
	require.NoError(t, err, "the caller's file stays open")
}
