package blockdev

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/scsi"
)

// Method names.
const (
	MethodInquiry  = "inquiry"
	MethodCapacity = "capacity"
	MethodRead     = "read"
	MethodWrite    = "write"
)

// MaxTransfer bounds one read or write request, so a client cannot make
// the driver allocate without limit.
const MaxTransfer = 16 << 20

// ErrBadRequest reports a malformed method argument.
var ErrBadRequest = errors.New("malformed request")

// Inquiry is the reply of "inquiry".
type Inquiry struct {
	Vendor    string `json:"vendor"`
	Product   string `json:"product"`
	Revision  string `json:"revision"`
	Type      int    `json:"type"`
	Removable bool   `json:"removable"`
}

// Capacity is the reply of "capacity".
type Capacity struct {
	Blocks    uint64 `json:"blocks"`
	BlockSize uint32 `json:"block_size"`
}

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
		MethodInquiry: func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			d, err := get(s, MethodInquiry)
			if err != nil {
				return nil, err
			}
			q, err := d.Inquiry(ctx)
			if err != nil {
				return nil, mapErr(err)
			}
			return json.Marshal(Inquiry{Vendor: q.Vendor, Product: q.Product, Revision: q.Revision, Type: int(q.Type), Removable: q.Removable})
		},
		MethodCapacity: func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			d, err := get(s, MethodCapacity)
			if err != nil {
				return nil, err
			}
			c, err := d.ReadCapacity(ctx)
			if err != nil {
				return nil, mapErr(err)
			}
			return json.Marshal(Capacity{Blocks: c.Blocks(), BlockSize: c.BlockSize})
		},
		MethodRead: func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			d, err := get(s, MethodRead)
			if err != nil {
				return nil, err
			}
			if len(in) != 12 {
				return nil, fmt.Errorf("%w: read takes lba (8 bytes) and block count (4 bytes), got %d bytes", ErrBadRequest, len(in))
			}
			lba, blocks := binary.BigEndian.Uint64(in), binary.BigEndian.Uint32(in[8:])
			c, err := d.Capacity(ctx)
			if err != nil {
				return nil, mapErr(err)
			}
			n := uint64(blocks) * uint64(c.BlockSize)
			if n > MaxTransfer {
				return nil, fmt.Errorf("%w: %d blocks of %d bytes exceed the %d-byte limit", ErrBadRequest, blocks, c.BlockSize, MaxTransfer)
			}
			buf := make([]byte, n)
			got, err := d.Read(ctx, lba, buf)
			if err != nil {
				return nil, mapErr(err)
			}
			return buf[:got], nil
		},
		MethodWrite: func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			d, err := get(s, MethodWrite)
			if err != nil {
				return nil, err
			}
			if len(in) < 8 || len(in)-8 > MaxTransfer {
				return nil, fmt.Errorf("%w: write takes lba (8 bytes) and up to %d bytes of data, got %d bytes", ErrBadRequest, MaxTransfer, len(in))
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

// EncodeRead encodes a "read" request.
func EncodeRead(lba uint64, blocks uint32) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 12), lba)
	return binary.BigEndian.AppendUint32(b, blocks)
}

// EncodeWrite encodes a "write" request.
func EncodeWrite(lba uint64, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(data)), lba)
	return append(b, data...)
}

// DecodeInquiry decodes an "inquiry" reply.
func DecodeInquiry(b []byte) (Inquiry, error) {
	var q Inquiry
	err := json.Unmarshal(b, &q)
	return q, err
}

// DecodeCapacity decodes a "capacity" reply.
func DecodeCapacity(b []byte) (Capacity, error) {
	var c Capacity
	err := json.Unmarshal(b, &c)
	return c, err
}
