package scsisim

import (
	"context"
	"sync"

	"github.com/drvkit/drvkit/driver/scsi"
)

// Transport is a scsi.Transport executing commands on a Disk in memory,
// with autosense, like SG_IO. Unplug makes it behave as a vanished device.
type Transport struct {
	disk *Disk

	mu      sync.Mutex
	gone    chan struct{}
	closed  bool
	hook    func(ctx context.Context, cmd *scsi.Command) error
	unplugd bool
}

var _ scsi.Transport = (*Transport)(nil)

// NewTransport returns a Transport in front of d.
func NewTransport(d *Disk) *Transport {
	return &Transport{disk: d, gone: make(chan struct{})}
}

// Disk returns the disk behind t.
func (t *Transport) Disk() *Disk { return t.disk }

// SetHook installs a function run at the start of every Execute (nil
// removes it); a hook that blocks simulates a command in flight. A hook error
// is returned as the transport error.
func (t *Transport) SetHook(h func(ctx context.Context, cmd *scsi.Command) error) {
	t.mu.Lock()
	t.hook = h
	t.mu.Unlock()
}

// Gone is closed when the device is unplugged; a blocking hook can select
// on it to fail its in-flight command.
func (t *Transport) Gone() <-chan struct{} { return t.gone }

// Unplug makes in-flight (hooked) and later commands fail with ErrNoDevice.
func (t *Transport) Unplug() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.unplugd {
		t.unplugd = true
		close(t.gone)
	}
}

// Execute implements scsi.Transport.
func (t *Transport) Execute(ctx context.Context, cmd *scsi.Command) (scsi.Result, error) {
	t.mu.Lock()
	closed, unplugged, hook := t.closed, t.unplugd, t.hook
	t.mu.Unlock()
	switch {
	case closed:
		return scsi.Result{}, &scsi.OpError{Op: "execute", Err: scsi.ErrClosed}
	case unplugged:
		return scsi.Result{}, &scsi.OpError{Op: "execute", Err: scsi.ErrNoDevice}
	}
	if err := ctx.Err(); err != nil {
		return scsi.Result{}, &scsi.OpError{Op: "execute", Err: err}
	}
	if hook != nil {
		if err := hook(ctx, cmd); err != nil {
			return scsi.Result{}, &scsi.OpError{Op: "execute", Err: err}
		}
		select {
		case <-t.gone:
			return scsi.Result{}, &scsi.OpError{Op: "execute", Err: scsi.ErrNoDevice}
		default:
		}
	}
	var in, out []byte
	switch cmd.Dir {
	case scsi.DirIn:
		in = cmd.Data
	case scsi.DirOut:
		out = cmd.Data
	}
	n, st, sense := t.disk.Execute(cmd.CDB, out, in)
	res := scsi.Result{Status: scsi.Status(st), Sense: sense}
	if cmd.Dir != scsi.DirNone {
		res.Residual = len(cmd.Data) - n
	}
	return res, nil
}

// Close implements scsi.Transport.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	return nil
}
