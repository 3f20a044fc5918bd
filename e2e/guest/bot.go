//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/e2e/agentproto"
)

// botCheck talks to a USB stick in user space: gousb opens it, the kernel's
// usb-storage is detached from its interface, drvkit's bulk-only transport
// carries INQUIRY, READ CAPACITY, WRITE and READ, and closing hands the
// interface back to the kernel.
//
// notify reports progress to the host: "usb.bot.reading" once the first
// read of ReadUntilError succeeded, so the host knows when to pull the stick.
func botCheck(x agentproto.BOTArgs, notify func(event string)) (*agentproto.BOTResult, error) {
	sel, err := usb.ParseSelector(x.Selector)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout(x.TimeoutMs))
	defer cancel()
	t0 := time.Now()
	backend := usb.NewGousb()
	defer backend.Close()
	h, err := backend.Open(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("bot: open %s: %w", sel, err)
	}
	bot, err := scsi.NewBOT(ctx, h)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("bot: %w", err)
	}
	d := scsi.NewDevice(bot)
	res := &agentproto.BOTResult{Device: h.Info().String()}
	for _, k := range h.Detached() {
		res.Detached = append(res.Detached, fmt.Sprintf("%s@%d", k.Driver, k.Interface))
	}
	err = func() error {
		inq, err := d.Inquiry(ctx)
		if err != nil {
			return fmt.Errorf("bot: INQUIRY: %w", err)
		}
		res.Inquiry = agentproto.Inquiry{Device: res.Device, PeripheralType: int(inq.Type),
			Vendor: inq.Vendor, Product: inq.Product, Revision: inq.Revision}
		c, err := d.Capacity(ctx)
		if err != nil {
			return fmt.Errorf("bot: READ CAPACITY: %w", err)
		}
		res.BlockSize, res.Blocks = int(c.BlockSize), c.LastLBA+1
		if x.WriteLBA >= 0 {
			if err := roundTrip(ctx, d, x, c.BlockSize); err != nil {
				return err
			}
			res.RoundTrip = true
		}
		if x.ReadUntilError {
			buf := make([]byte, c.BlockSize)
			for {
				if _, err := d.Read(ctx, 0, buf); err != nil {
					if ctx.Err() != nil {
						return fmt.Errorf("bot: still reading after %v: %w", timeout(x.TimeoutMs), err)
					}
					res.ReadError = err.Error()
					res.NoDevice = errors.Is(err, scsi.ErrNoDevice) || errors.Is(err, usb.ErrNoDevice)
					return nil
				}
				if res.Reads++; res.Reads == 1 {
					notify(agentproto.EventBOTReading)
				}
			}
		}
		return nil
	}()
	cerr := d.Close()
	if res.NoDevice && (errors.Is(cerr, scsi.ErrNoDevice) || errors.Is(cerr, usb.ErrNoDevice)) {
		cerr = nil // nothing to hand back: the device is gone
	}
	if cerr != nil && err == nil {
		err = fmt.Errorf("bot: close: %w", cerr)
	}
	res.StillDetached = len(h.Detached())
	if cerr := h.Close(); cerr != nil && err == nil && !res.NoDevice {
		err = fmt.Errorf("bot: close device: %w", cerr)
	}
	res.Ms = float64(time.Since(t0).Microseconds()) / 1000
	return res, err
}

// roundTrip writes a block with a recognisable pattern and reads it back.
func roundTrip(ctx context.Context, d *scsi.Device, x agentproto.BOTArgs, blockSize uint32) error {
	blk := bytes.Repeat([]byte(x.Pattern+"\x00"), int(blockSize)/(len(x.Pattern)+1)+1)[:blockSize]
	if err := d.Write(ctx, uint64(x.WriteLBA), blk); err != nil {
		return fmt.Errorf("bot: WRITE: %w", err)
	}
	got := make([]byte, blockSize)
	if _, err := d.Read(ctx, uint64(x.WriteLBA), got); err != nil {
		return fmt.Errorf("bot: READ: %w", err)
	}
	if !bytes.Equal(got, blk) {
		return fmt.Errorf("bot: block %d read back differs from what was written", x.WriteLBA)
	}
	return nil
}
