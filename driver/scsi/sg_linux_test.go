package scsi

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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

// TestSGReal runs INQUIRY, TEST UNIT READY and READ CAPACITY on every
// /dev/sg* node there is, and a READ of block 0 on disks. The QEMU
// end-to-end run has /dev/sg0 (virtio-scsi disk) and /dev/sg1 (usb-storage).
func TestSGReal(t *testing.T) {
	nodes, _ := filepath.Glob("/dev/sg[0-9]*")
	if len(nodes) == 0 {
		t.Skip("SKIPPED: no /dev/sg* node on this machine; the real SG_IO path runs in the QEMU end-to-end test")
	}
	ctx := context.Background()
	for _, n := range nodes {
		t.Run(filepath.Base(n), func(t *testing.T) {
			sg, err := OpenSG(n)
			require.NoError(t, err)
			require.GreaterOrEqual(t, sg.Version(), sgMinVersion)
			d := NewDevice(sg)
			defer d.Close()
			inq, err := d.Inquiry(ctx)
			require.NoError(t, err)
			t.Logf("%s: type %d vendor %q product %q revision %q (sg %d)", n, inq.Type, inq.Vendor, inq.Product, inq.Revision, sg.Version())
			if inq.Type != TypeDisk {
				return
			}
			// The first command after attach may report a unit attention.
			if err := d.TestUnitReady(ctx); err != nil {
				require.ErrorIs(t, err, ErrUnitAttention)
				require.NoError(t, d.TestUnitReady(ctx))
			}
			c, err := d.ReadCapacity(ctx)
			require.NoError(t, err)
			t.Logf("%s: %d blocks of %d bytes", n, c.Blocks(), c.BlockSize)
			buf := make([]byte, c.BlockSize)
			got, err := d.Read(ctx, 0, buf)
			require.NoError(t, err)
			require.Equal(t, int(c.BlockSize), got)
		})
	}
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
