package scsi

import (
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseInquiry(t *testing.T) {
	// Standard INQUIRY data as a QEMU scsi-hd answers it (see
	// /work/shared/notes/qemu-e2e.md: vendor QEMU, product QEMU HARDDISK, 2.5+).
	qemu := append([]byte{0x00, 0x00, 0x05, 0x12, 0x1f, 0, 0, 0x12}, "QEMU    QEMU HARDDISK   2.5+"...)
	tests := []struct {
		name    string
		in      []byte
		want    InquiryData
		wantErr bool
	}{
		{name: "qemu disk", in: qemu, want: InquiryData{Type: TypeDisk, Version: 5, RawVersion: 5, AdditLen: 31, Vendor: "QEMU", Product: "QEMU HARDDISK", Revision: "2.5+"}},
		{name: "removable cdrom", in: append([]byte{0x05, 0x80, 0x05, 0x32, 0x1f, 0, 0, 0}, "QEMU    QEMU DVD-ROM    2.5+"...),
			want: InquiryData{Type: TypeCDROM, Removable: true, Version: 5, RawVersion: 5, AdditLen: 31, Vendor: "QEMU", Product: "QEMU DVD-ROM", Revision: "2.5+"}},
		{name: "no LUN", in: []byte{0x7f, 0, 0, 0, 0}, want: InquiryData{Qualifier: 3, Type: TypeNone}},
		{name: "additional length cuts strings", in: append([]byte{0, 0, 6, 2, 15, 0, 0, 0}, "VENDOR  PRODUCT-CUT     1234"...),
			want: InquiryData{Version: 6, RawVersion: 6, AdditLen: 15, Vendor: "VENDOR", Product: "PROD"}},
		{name: "control characters neutralised", in: append([]byte{0, 0, 6, 2, 31, 0, 0, 0}, "V\x1b[2J   PRODUCT         REV\x07"...),
			want: InquiryData{Version: 6, RawVersion: 6, AdditLen: 31, Vendor: "V?[2J", Product: "PRODUCT", Revision: "REV?"}},
		{name: "too short", in: []byte{0, 0, 0, 0}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInquiry(tt.in)
			if tt.wantErr {
				require.ErrorIs(t, err, ErrShortResponse)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestParseReadCapacity(t *testing.T) {
	c, err := ParseReadCapacity10(mustHex("001fffff00000200"))
	require.NoError(t, err)
	require.Equal(t, Capacity{LastLBA: 0x1fffff, BlockSize: 512}, c)
	require.Equal(t, uint64(1<<30), c.Bytes())

	c, err = ParseReadCapacity16(mustHex("00000003ffffffff000010000103"))
	require.NoError(t, err)
	require.Equal(t, Capacity{LastLBA: 0x3ffffffff, BlockSize: 4096, ProtectionEnabled: true, LogicalPerPhysExp: 3}, c)

	_, err = ParseReadCapacity10(mustHex("0000"))
	require.ErrorIs(t, err, ErrShortResponse)
	_, err = ParseReadCapacity16(mustHex("0000000000000000"))
	require.ErrorIs(t, err, ErrShortResponse)
	_, err = ParseReadCapacity10(mustHex("0000001000000000"))
	require.ErrorContains(t, err, "implausible logical block length 0")
}

func TestCDBs(t *testing.T) {
	c, err := Read10CDB(0x12345678, 0x100)
	require.NoError(t, err)
	require.Equal(t, "28001234567800010000", hex.EncodeToString(c))
	c, err = Write10CDB(1, 1)
	require.NoError(t, err)
	require.Equal(t, "2a000000000100000100", hex.EncodeToString(c))
	_, err = Read10CDB(1<<32, 1)
	require.ErrorIs(t, err, ErrInvalidRequest)
	_, err = Write10CDB(0, 0x10000)
	require.ErrorIs(t, err, ErrInvalidRequest)
	require.Equal(t, "88000000000100000000000000100000", hex.EncodeToString(Read16CDB(1<<32, 16)))
	require.Equal(t, "8a000000000000000007000000010000", hex.EncodeToString(Write16CDB(7, 1)))
	require.Equal(t, "9e100000000000000000000000200000", hex.EncodeToString(ReadCapacity16CDB(32)))
	require.Equal(t, "250000000000000000000000"[:20], hex.EncodeToString(ReadCapacity10CDB()))
	require.Equal(t, "120000002400", hex.EncodeToString(InquiryCDB(36)))
	require.Equal(t, "120180002400", hex.EncodeToString(VPDInquiryCDB(0x80, 36)))
	require.Equal(t, "0300000012"+"00", hex.EncodeToString(RequestSenseCDB(18)))
	require.Equal(t, "000000000000", hex.EncodeToString(TestUnitReadyCDB()))
	require.Equal(t, "35000000000000000000", hex.EncodeToString(SynchronizeCache10CDB()))
	for _, op := range []byte{0x00, 0x28, 0x88, 0xa8} {
		require.NotZero(t, CDBLen(op))
	}
	require.Zero(t, CDBLen(0xc0))

	lba, n, ok := DecodeRW(Read16CDB(1<<40, 9))
	require.True(t, ok)
	require.Equal(t, uint64(1<<40), lba)
	require.Equal(t, uint32(9), n)
	_, _, ok = DecodeRW([]byte{OpRead10, 0})
	require.False(t, ok)
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
