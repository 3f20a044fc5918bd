package blockdrv_test

import (
	"context"
	"errors"
	"testing"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/scsi/blockdrv"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/stretchr/testify/require"
)

func methods(dev *scsi.Device) map[string]driver.Method {
	return blockdrv.Methods(func(*driver.Service) *scsi.Device { return dev })
}

func TestMethods(t *testing.T) {
	ctx := context.Background()
	tr := scsitest.NewTransport(scsitest.NewDisk(64, 512))
	m := methods(scsi.NewDevice(tr))
	_, err := m[blockdev.MethodWrite](ctx, nil, blockdev.EncodeWrite(1, make([]byte, 512)))
	require.NoError(t, err)
	out, err := m[blockdev.MethodRead](ctx, nil, blockdev.EncodeRead(1, 1))
	require.NoError(t, err)
	require.Len(t, out, 512)
	_, err = m[blockdev.MethodWrite](ctx, nil, []byte{1})
	require.ErrorIs(t, err, blockdev.ErrBadRequest)

	tr.Unplug()
	_, err = m[blockdev.MethodInquiry](ctx, nil, nil)
	require.ErrorIs(t, err, driver.ErrNoDevice)
	require.ErrorIs(t, err, scsi.ErrNoDevice)

	_, err = methods(nil)[blockdev.MethodCapacity](ctx, nil, nil)
	require.ErrorIs(t, err, driver.ErrNotActive)

	_, err = blockdev.DecodeCapacity([]byte("{"))
	require.Error(t, err)
}

// FuzzMethods feeds arbitrary requests to read and write: a clear error or
// a result, never a panic or an allocation beyond MaxTransfer.
func FuzzMethods(f *testing.F) {
	f.Fuzz(func(t *testing.T, name string, in []byte) {
		if name != blockdev.MethodRead && name != blockdev.MethodWrite {
			return
		}
		m := methods(scsi.NewDevice(scsitest.NewTransport(scsitest.NewDisk(64, 512))))
		out, err := m[name](context.Background(), nil, in)
		if err != nil {
			if !errors.Is(err, blockdev.ErrBadRequest) && !errors.Is(err, scsi.ErrInvalidRequest) {
				t.Fatalf("%s(%x): unexpected error %v", name, in, err)
			}
			return
		}
		if len(out) > blockdev.MaxTransfer {
			t.Fatalf("reply of %d bytes", len(out))
		}
	})
}
