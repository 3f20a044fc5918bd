package scsi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/drvkit/drvkit/driver/usb"
)

// USB Mass Storage Class Bulk-Only Transport 1.0 wire constants.
const (
	botCBWSignature = 0x43425355 // "USBC"
	botCSWSignature = 0x53425355 // "USBS"
	botCBWLen       = 31
	botCSWLen       = 13

	botStatusPassed     = 0
	botStatusFailed     = 1
	botStatusPhaseError = 2

	// Class-specific requests (BOT 3.1, 3.2).
	botResetRequestType = 0x21 // class, interface, host-to-device
	botResetRequest     = 0xff

	// Mass-storage interface triple: class 08, SCSI transparent 06, BOT 50.
	MassStorageClass    = 0x08
	MassStorageSubClass = 0x06
	MassStorageProtocol = 0x50
)

// ErrInvalidCSW reports a CSW with a bad length, signature or tag.
var ErrInvalidCSW = errors.New("invalid command status wrapper")

// BOT is a Transport speaking the USB mass-storage bulk-only protocol
// (CBW, data, CSW) to one logical unit of a usb.Device. It recovers the
// way the BOT specification prescribes: a stalled data or status pipe is
// cleared and the CSW read; a phase error or an invalid CSW triggers reset
// recovery (Bulk-Only Mass Storage Reset, then clear-halt on both pipes)
// and the command is retried once. BOT has no autosense: after a failed
// command, BOT issues REQUEST SENSE itself and returns the sense in Result.
//
// Commands are serialised (BOT has one command in flight per interface).
// To abort one that is stuck, close the usb.Device: the transfer fails
// with ErrClosed at once and Close of the BOT then returns promptly.
type BOT struct {
	dev   usb.Device
	iface int
	in    uint8
	out   uint8
	lun   uint8
	want  int // interface number asked for, -1 for any

	mu     sync.Mutex
	tag    uint32
	cbw    [botCBWLen]byte
	csw    [botCSWLen]byte
	sense  [18]byte
	closed bool
	stats  BOTStats
}

var _ Transport = (*BOT)(nil)

// BOTStats counts recovery actions.
type BOTStats struct {
	Commands      int // CBWs sent
	ClearHalts    int
	ResetRecovery int
	Retries       int
}

// BOTOption configures NewBOT.
type BOTOption func(*BOT)

// WithInterface restricts NewBOT to interface number n (default: the first
// bulk-only mass-storage interface).
func WithInterface(n int) BOTOption { return func(b *BOT) { b.want = n } }

// WithLUN selects the logical unit (default 0).
func WithLUN(lun uint8) BOTOption { return func(b *BOT) { b.lun = lun } }

// NewBOT finds the bulk-only mass-storage interface of dev, claims it (a
// kernel usb-storage driver is detached and recorded by the usb layer) and
// returns a Transport over it. Close releases the interface, which
// re-attaches the kernel driver; it does not close dev.
func NewBOT(ctx context.Context, dev usb.Device, opts ...BOTOption) (*BOT, error) {
	b := &BOT{dev: dev, iface: -1, want: -1}
	for _, o := range opts {
		o(b)
	}
	for _, i := range dev.Info().Interfaces {
		if i.Class != MassStorageClass || i.SubClass != MassStorageSubClass || i.Protocol != MassStorageProtocol ||
			(b.want >= 0 && i.Number != b.want) {
			continue
		}
		in, okIn := i.Endpoint(usb.TransferBulk, true)
		out, okOut := i.Endpoint(usb.TransferBulk, false)
		if okIn && okOut {
			b.iface, b.in, b.out = i.Number, in.Address, out.Address
			if err := dev.ClaimInterface(ctx, i.Number, i.Alternate); err != nil {
				return nil, &OpError{Op: "bot claim", Err: botErr(err)}
			}
			return b, nil
		}
	}
	return nil, &OpError{Op: "bot", Err: fmt.Errorf("%w: %s has no bulk-only mass-storage interface with bulk in and out endpoints", ErrTransport, dev.Info())}
}

// Stats returns the recovery counters.
func (b *BOT) Stats() BOTStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Close releases the interface (re-attaching a detached kernel driver).
func (b *BOT) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	// Gone, closed, or already released (ReattachAll at exit): nothing to give back.
	if err := b.dev.ReleaseInterface(b.iface); err != nil && !errors.Is(err, usb.ErrNoDevice) && !errors.Is(err, usb.ErrClosed) && !errors.Is(err, usb.ErrNotClaimed) {
		return &OpError{Op: "bot release", Err: err}
	}
	return nil
}

// retryable errors are those after which reset recovery put the device
// back in a known state.
func retryable(err error) bool {
	return errors.Is(err, ErrPhaseError) || errors.Is(err, ErrInvalidCSW)
}

// Execute implements Transport.
func (b *BOT) Execute(ctx context.Context, cmd *Command) (Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return Result{}, &OpError{Op: "bot", Err: ErrClosed}
	}
	if len(cmd.CDB) == 0 || len(cmd.CDB) > 16 {
		return Result{}, &OpError{Op: "bot", Err: fmt.Errorf("%w: CDB of %d bytes (BOT carries 1-16)", ErrInvalidRequest, len(cmd.CDB))}
	}
	ctx, cancel := context.WithTimeout(ctx, timeoutFor(ctx, cmd.Timeout))
	defer cancel()
	res, err := b.transact(ctx, cmd)
	if err != nil && retryable(err) && ctx.Err() == nil {
		b.stats.Retries++
		res, err = b.transact(ctx, cmd)
	}
	if err != nil {
		return res, err
	}
	if res.Status == StatusCheckCondition && cmd.CDB[0] != OpRequestSense {
		sense, err := b.requestSense(ctx)
		if len(sense) == 0 && !errors.Is(err, ErrNoDevice) && b.gone(ctx) {
			err = &OpError{Op: "bot", Err: fmt.Errorf("%w: no sense after CHECK CONDITION, and the device does not answer", ErrNoDevice)}
		}
		if errors.Is(err, ErrNoDevice) {
			// Pulled between the command and its sense: the device is
			// gone, which is the answer (not a CHECK CONDITION without
			// sense data).
			return res, err
		}
		res.Sense = sense
	}
	return res, nil
}

// gone asks the device itself whether it is still there: a GET_STATUS on
// its control pipe fails with ErrNoDevice once it was unplugged. Checked,
// not guessed from a missing sense.
func (b *BOT) gone(ctx context.Context) bool {
	var st [2]byte
	_, err := b.dev.Control(ctx, 0x80, 0x00, 0, 0, st[:])
	return errors.Is(err, usb.ErrNoDevice)
}

// requestSense fetches sense data after a failed command; nil if the
// device cannot provide it, with the transport's error if it failed.
func (b *BOT) requestSense(ctx context.Context) ([]byte, error) {
	rs := Command{CDB: RequestSenseCDB(uint8(len(b.sense))), Dir: DirIn, Data: b.sense[:]}
	r, err := b.transact(ctx, &rs)
	if err != nil || r.Status != StatusGood {
		return nil, err
	}
	n := len(b.sense) - clampResid(r.Residual, len(b.sense))
	return append([]byte(nil), b.sense[:n]...), nil
}

// transact runs one CBW/data/CSW exchange.
func (b *BOT) transact(ctx context.Context, cmd *Command) (Result, error) {
	b.tag++
	tag := b.tag
	b.stats.Commands++
	dlen := len(cmd.Data)
	if cmd.Dir == DirNone {
		dlen = 0
	}
	c := b.cbw[:]
	clear(c)
	binary.LittleEndian.PutUint32(c[0:], botCBWSignature)
	binary.LittleEndian.PutUint32(c[4:], tag)
	binary.LittleEndian.PutUint32(c[8:], uint32(dlen))
	if cmd.Dir == DirIn {
		c[12] = 0x80
	}
	c[13] = b.lun & 0x0f
	c[14] = uint8(len(cmd.CDB))
	copy(c[15:], cmd.CDB)

	if _, err := b.dev.BulkTransfer(ctx, b.out, c); err != nil {
		return Result{}, b.fail(ctx, "bot cbw", err)
	}

	moved := 0
	if dlen > 0 {
		ep := b.out
		if cmd.Dir == DirIn {
			ep = b.in
		}
		n, err := b.dev.BulkTransfer(ctx, ep, cmd.Data[:dlen])
		moved = n
		if err != nil {
			if !errors.Is(err, usb.ErrStall) {
				return Result{}, b.fail(ctx, "bot data", err)
			}
			// The device ended the data phase with a stall: clear it and
			// go on to the status phase (BOT 6.7.2, 6.7.3).
			if err := b.clearHalt(ctx, ep); err != nil {
				return Result{}, b.fail(ctx, "bot clear halt", err)
			}
		}
	}

	csw, err := b.readCSW(ctx)
	if err != nil {
		return Result{}, err
	}
	residue, status, err := parseCSW(csw, tag)
	if err != nil {
		return Result{}, b.recover(ctx, "bot csw", err)
	}
	res := Result{Residual: dlen - moved}
	if int64(residue) > int64(res.Residual) && int64(residue) <= int64(dlen) {
		res.Residual = int(residue)
	}
	switch status {
	case botStatusPassed:
		res.Status = StatusGood
	case botStatusFailed:
		res.Status = StatusCheckCondition
	case botStatusPhaseError:
		return Result{}, b.recover(ctx, "bot csw", ErrPhaseError)
	}
	return res, nil
}

// parseCSW validates a command status wrapper (BOT 6.3: 13 bytes, the
// "USBS" signature, our tag, status 0-2) and returns its residue and status.
func parseCSW(b []byte, tag uint32) (residue uint32, status uint8, err error) {
	if len(b) != botCSWLen || binary.LittleEndian.Uint32(b[0:]) != botCSWSignature {
		return 0, 0, fmt.Errorf("%w: %d bytes, signature %#x", ErrInvalidCSW, len(b), signatureOf(b))
	}
	if got := binary.LittleEndian.Uint32(b[4:]); got != tag {
		return 0, 0, fmt.Errorf("%w: tag %#x, want %#x", ErrInvalidCSW, got, tag)
	}
	if b[12] > botStatusPhaseError {
		return 0, 0, fmt.Errorf("%w: status %d", ErrInvalidCSW, b[12])
	}
	return binary.LittleEndian.Uint32(b[8:]), b[12], nil
}

func signatureOf(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

// readCSW reads the status wrapper, clearing one stall on the way (BOT
// 5.3.3: a stalled CSW read is retried once after clear-halt).
func (b *BOT) readCSW(ctx context.Context) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		n, err := b.dev.BulkTransfer(ctx, b.in, b.csw[:])
		if err == nil {
			return b.csw[:n], nil
		}
		if !errors.Is(err, usb.ErrStall) || attempt > 0 {
			return nil, b.fail(ctx, "bot csw", err)
		}
		if err := b.clearHalt(ctx, b.in); err != nil {
			return nil, b.fail(ctx, "bot clear halt", err)
		}
	}
}

func (b *BOT) clearHalt(ctx context.Context, ep uint8) error {
	b.stats.ClearHalts++
	return b.dev.ClearHalt(ctx, ep)
}

// fail handles a transport error in the middle of a transaction: unless
// the device is gone, it is out of step with us, so reset recovery runs
// before the error is returned.
func (b *BOT) fail(ctx context.Context, op string, err error) error {
	if errors.Is(err, usb.ErrNoDevice) || errors.Is(err, usb.ErrClosed) {
		return &OpError{Op: op, Err: botErr(err)}
	}
	return b.recover(ctx, op, botErr(err))
}

// recover performs reset recovery (BOT 5.3.4) and returns cause, or the
// recovery failure joined to it.
func (b *BOT) recover(ctx context.Context, op string, cause error) error {
	b.stats.ResetRecovery++
	// The command's context may be what expired; recovery gets its own.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := b.dev.Control(rctx, botResetRequestType, botResetRequest, 0, uint16(b.iface), nil)
	if err == nil {
		err = b.clearHalt(rctx, b.in)
	}
	if err == nil {
		err = b.clearHalt(rctx, b.out)
	}
	if err != nil {
		return &OpError{Op: op, Err: fmt.Errorf("%w; reset recovery failed: %w", cause, botErr(err))}
	}
	return &OpError{Op: op, Err: cause}
}

// botErr maps usb errors to the scsi sentinels while keeping the usb error
// matchable too.
func botErr(err error) error {
	switch {
	case errors.Is(err, usb.ErrNoDevice):
		return fmt.Errorf("%w: %w", ErrNoDevice, err)
	case errors.Is(err, usb.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.Is(err, usb.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, ErrPhaseError), errors.Is(err, ErrInvalidCSW), errors.Is(err, context.Canceled):
		return err
	}
	return fmt.Errorf("%w: %w", ErrTransport, err)
}
