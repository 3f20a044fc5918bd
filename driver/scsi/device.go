package scsi

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Device issues SCSI block commands over a Transport. It learns the block
// size and capacity with READ CAPACITY on first need and picks the 10- or
// 16-byte READ/WRITE variant per command: the 16-byte form only when the
// LBA or transfer length do not fit 10 bytes, because some USB bridges
// reject 16-byte CDBs.
type Device struct {
	t        Transport
	maxBytes int

	mu  sync.Mutex
	cap *Capacity // nil until known; reset on unit attention
}

// DeviceOption configures a Device.
type DeviceOption func(*Device)

// WithMaxTransfer caps the bytes moved by one READ/WRITE command; longer
// requests are split. The default is 1 MiB.
func WithMaxTransfer(n int) DeviceOption {
	return func(d *Device) {
		if n > 0 {
			d.maxBytes = n
		}
	}
}

// NewDevice returns a Device issuing commands over t.
func NewDevice(t Transport, opts ...DeviceOption) *Device {
	d := &Device{t: t, maxBytes: 1 << 20}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Transport returns the underlying transport.
func (d *Device) Transport() Transport { return d.t }

// Close closes the transport.
func (d *Device) Close() error { return d.t.Close() }

// do runs one command and turns its status into an error.
func (d *Device) do(ctx context.Context, op string, cmd *Command) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, &OpError{Op: op, Err: err}
	}
	res, err := d.t.Execute(ctx, cmd)
	if err != nil {
		var oe *OpError
		if errors.As(err, &oe) {
			return res, err
		}
		return res, &OpError{Op: op, Err: err}
	}
	switch res.Status {
	case StatusGood, StatusConditionMet:
		return res, nil
	case StatusCheckCondition:
		s, perr := ParseSense(res.Sense)
		if perr != nil {
			return res, &OpError{Op: op, Err: fmt.Errorf("%w (%v)", ErrCheckCondition, perr)}
		}
		if s.Key == SenseUnitAttention {
			// Capacity may have changed (medium change, resize, reset).
			d.mu.Lock()
			d.cap = nil
			d.mu.Unlock()
		}
		if s.Key == SenseNoSense || s.Key == SenseRecoveredError {
			// The command completed; the sense is informational.
			return res, nil
		}
		return res, &SenseError{Op: op, Sense: s}
	}
	return res, &StatusError{Op: op, Status: res.Status}
}

// TestUnitReady returns nil when the unit is ready, an error matching
// ErrNotReady when it is not, ErrUnitAttention after a reset or medium change.
func (d *Device) TestUnitReady(ctx context.Context) error {
	_, err := d.do(ctx, "TEST UNIT READY", &Command{CDB: TestUnitReadyCDB()})
	return err
}

// Inquiry returns standard INQUIRY data.
func (d *Device) Inquiry(ctx context.Context) (InquiryData, error) {
	buf := make([]byte, InquiryLen)
	res, err := d.do(ctx, "INQUIRY", &Command{CDB: InquiryCDB(InquiryLen), Dir: DirIn, Data: buf})
	if err != nil {
		return InquiryData{}, err
	}
	return ParseInquiry(buf[:len(buf)-clampResid(res.Residual, len(buf))])
}

// RequestSense asks the target for its pending sense data.
func (d *Device) RequestSense(ctx context.Context) (Sense, error) {
	buf := make([]byte, 252)
	res, err := d.do(ctx, "REQUEST SENSE", &Command{CDB: RequestSenseCDB(252), Dir: DirIn, Data: buf})
	if err != nil {
		return Sense{}, err
	}
	return ParseSense(buf[:len(buf)-clampResid(res.Residual, len(buf))])
}

// ReadCapacity issues READ CAPACITY(10), and READ CAPACITY(16) when the
// medium is too large for it, and caches the answer for Read and Write.
func (d *Device) ReadCapacity(ctx context.Context) (Capacity, error) {
	buf := make([]byte, 32)
	res, err := d.do(ctx, "READ CAPACITY(10)", &Command{CDB: ReadCapacity10CDB(), Dir: DirIn, Data: buf[:8]})
	if err != nil {
		return Capacity{}, err
	}
	c, err := ParseReadCapacity10(buf[:8-clampResid(res.Residual, 8)])
	if err != nil {
		return Capacity{}, &OpError{Op: "READ CAPACITY(10)", Err: err}
	}
	if c.LastLBA == MaxLBA10 {
		res, err = d.do(ctx, "READ CAPACITY(16)", &Command{CDB: ReadCapacity16CDB(32), Dir: DirIn, Data: buf})
		if err != nil {
			return Capacity{}, err
		}
		if c, err = ParseReadCapacity16(buf[:32-clampResid(res.Residual, 32)]); err != nil {
			return Capacity{}, &OpError{Op: "READ CAPACITY(16)", Err: err}
		}
	}
	d.mu.Lock()
	d.cap = &c
	d.mu.Unlock()
	return c, nil
}

// Capacity returns the capacity learnt by the last READ CAPACITY, issuing
// one if it is unknown (or was invalidated by a unit attention).
func (d *Device) Capacity(ctx context.Context) (Capacity, error) {
	d.mu.Lock()
	c := d.cap
	d.mu.Unlock()
	if c != nil {
		return *c, nil
	}
	return d.ReadCapacity(ctx)
}

// Read reads len(buf)/blockSize blocks starting at lba into buf, which must
// be a whole number of blocks. It returns the bytes read.
func (d *Device) Read(ctx context.Context, lba uint64, buf []byte) (int, error) {
	return d.rw(ctx, false, lba, buf)
}

// Write writes data, a whole number of blocks, starting at lba.
func (d *Device) Write(ctx context.Context, lba uint64, data []byte) error {
	_, err := d.rw(ctx, true, lba, data)
	return err
}

func (d *Device) rw(ctx context.Context, write bool, lba uint64, buf []byte) (int, error) {
	name := "READ"
	if write {
		name = "WRITE"
	}
	c, err := d.Capacity(ctx)
	if err != nil {
		return 0, err
	}
	bs := int(c.BlockSize)
	if len(buf)%bs != 0 {
		return 0, &OpError{Op: name, Err: fmt.Errorf("%w: %d bytes is not a multiple of the %d-byte block", ErrInvalidRequest, len(buf), bs)}
	}
	blocks := uint64(len(buf) / bs)
	if lba > c.LastLBA || blocks > c.Blocks()-lba {
		return 0, &OpError{Op: name, Err: fmt.Errorf("%w: lba %d + %d blocks beyond the last block %d", ErrInvalidRequest, lba, blocks, c.LastLBA)}
	}
	chunk := max(d.maxBytes/bs, 1)
	done := 0
	for done < len(buf) {
		n := min(chunk, (len(buf)-done)/bs)
		cur := lba + uint64(done/bs)
		var cdb []byte
		op := name
		if cur+uint64(n)-1 > MaxLBA10 || n > MaxBlocks10 {
			op += "(16)"
			if write {
				cdb = Write16CDB(cur, uint32(n))
			} else {
				cdb = Read16CDB(cur, uint32(n))
			}
		} else {
			op += "(10)"
			if write {
				cdb, _ = Write10CDB(cur, uint32(n))
			} else {
				cdb, _ = Read10CDB(cur, uint32(n))
			}
		}
		cmd := Command{CDB: cdb, Dir: DirIn, Data: buf[done : done+n*bs]}
		if write {
			cmd.Dir = DirOut
		}
		res, err := d.do(ctx, op, &cmd)
		got := n*bs - clampResid(res.Residual, n*bs)
		done += got
		if err != nil {
			return done, err
		}
		if got < n*bs {
			return done, &OpError{Op: op, Err: fmt.Errorf("%w: %d of %d bytes transferred", ErrShortResponse, got, n*bs)}
		}
	}
	return done, nil
}

// SynchronizeCache flushes the target's volatile cache to the medium.
func (d *Device) SynchronizeCache(ctx context.Context) error {
	_, err := d.do(ctx, "SYNCHRONIZE CACHE", &Command{CDB: SynchronizeCache10CDB()})
	return err
}

func clampResid(r, n int) int {
	if r < 0 {
		return 0
	}
	if r > n {
		return n
	}
	return r
}
