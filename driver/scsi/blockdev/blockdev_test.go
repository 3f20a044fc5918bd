package blockdev_test

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/scsi/blockdev"
)

func TestEncode(t *testing.T) {
	b := blockdev.EncodeRead(1<<40, 7)
	require.Len(t, b, 12)
	require.Equal(t, uint64(1<<40), binary.BigEndian.Uint64(b))
	require.Equal(t, uint32(7), binary.BigEndian.Uint32(b[8:]))

	w := blockdev.EncodeWrite(9, []byte("data"))
	require.Equal(t, uint64(9), binary.BigEndian.Uint64(w))
	require.Equal(t, "data", string(w[8:]))
}

func TestDecode(t *testing.T) {
	q, err := blockdev.DecodeInquiry([]byte(`{"vendor":"QEMU","product":"QEMU HARDDISK","revision":"2.5+","type":0,"removable":true}`))
	require.NoError(t, err)
	require.Equal(t, blockdev.Inquiry{Vendor: "QEMU", Product: "QEMU HARDDISK", Revision: "2.5+", Removable: true}, q)
	c, err := blockdev.DecodeCapacity([]byte(`{"blocks":8192,"block_size":512}`))
	require.NoError(t, err)
	require.Equal(t, blockdev.Capacity{Blocks: 8192, BlockSize: 512}, c)
	_, err = blockdev.DecodeCapacity([]byte("{"))
	require.Error(t, err)
	_, err = blockdev.DecodeInquiry([]byte(`{"type":"x"}`))
	require.Error(t, err)
}
