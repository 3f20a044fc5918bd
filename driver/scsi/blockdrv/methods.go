package blockdrv

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
)

// Methods returns the client methods over the scsi.Device that dev returns
// for a service (nil when the driver is not started).
func Methods(dev func(*driver.Service) *scsi.Device) map[string]driver.Method {
	get := func(s *driver.Service, op string) (*scsi.Device, error) {
		d := dev(s)
		if d == nil {
			return nil, &driver.OpError{Op: op, Err: driver.ErrNotActive}
		}
		return d, nil
	}
	return map[string]driver.Method{
		blockdev.MethodInquiry: func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			d, err := get(s, blockdev.MethodInquiry)
			if err != nil {
				return nil, err
			}
			q, err := d.Inquiry(ctx)
			if err != nil {
				return nil, mapErr(err)
			}
			return json.Marshal(blockdev.Inquiry{Vendor: q.Vendor, Product: q.Product, Revision: q.Revision, Type: int(q.Type), Removable: q.Removable})
		},
		blockdev.MethodCapacity: func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			d, err := get(s, blockdev.MethodCapacity)
			if err != nil {
				return nil, err
			}
			c, err := d.ReadCapacity(ctx)
			if err != nil {
				return nil, mapErr(err)
			}
			return json.Marshal(blockdev.Capacity{Blocks: c.Blocks(), BlockSize: c.BlockSize})
		},
		blockdev.MethodRead: func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			d, err := get(s, blockdev.MethodRead)
			if err != nil {
				return nil, err
			}
			if len(in) != 12 {
				return nil, fmt.Errorf("%w: read takes lba (8 bytes) and block count (4 bytes), got %d bytes", blockdev.ErrBadRequest, len(in))
			}
			lba, blocks := binary.BigEndian.Uint64(in), binary.BigEndian.Uint32(in[8:])
			c, err := d.Capacity(ctx)
			if err != nil {
				return nil, mapErr(err)
			}
			n := uint64(blocks) * uint64(c.BlockSize)
			if n > blockdev.MaxTransfer {
				return nil, fmt.Errorf("%w: %d blocks of %d bytes exceed the %d-byte limit", blockdev.ErrBadRequest, blocks, c.BlockSize, blockdev.MaxTransfer)
			}
			buf := make([]byte, n)
			got, err := d.Read(ctx, lba, buf)
			if err != nil {
				return nil, mapErr(err)
			}
			return buf[:got], nil
		},
		blockdev.MethodWrite: func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			d, err := get(s, blockdev.MethodWrite)
			if err != nil {
				return nil, err
			}
			if len(in) < 8 || len(in)-8 > blockdev.MaxTransfer {
				return nil, fmt.Errorf("%w: write takes lba (8 bytes) and up to %d bytes of data, got %d bytes", blockdev.ErrBadRequest, blockdev.MaxTransfer, len(in))
			}
			return nil, mapErr(d.Write(ctx, binary.BigEndian.Uint64(in), in[8:]))
		},
	}
}

// mapErr makes a vanished device match driver.ErrNoDevice as well.
func mapErr(err error) error {
	if errors.Is(err, scsi.ErrNoDevice) {
		return driver.NoDevice(err)
	}
	return err
}
