//go:build linux

package main

import (
	"bytes"
	"context"
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
func botCheck(x agentproto.BOTArgs) (*agentproto.BOTResult, error) {
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
		if x.WriteLBA < 0 {
			return nil
		}
		// A block with a recognisable pattern, written and read back.
		blk := bytes.Repeat([]byte(x.Pattern+"\x00"), int(c.BlockSize)/(len(x.Pattern)+1)+1)[:c.BlockSize]
		if err := d.Write(ctx, uint64(x.WriteLBA), blk); err != nil {
			return fmt.Errorf("bot: WRITE: %w", err)
		}
		got := make([]byte, c.BlockSize)
		if _, err := d.Read(ctx, uint64(x.WriteLBA), got); err != nil {
			return fmt.Errorf("bot: READ: %w", err)
		}
		if !bytes.Equal(got, blk) {
			return fmt.Errorf("bot: block %d read back differs from what was written", x.WriteLBA)
		}
		res.RoundTrip = true
		return nil
	}()
	if cerr := d.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("bot: close: %w", cerr)
	}
	res.StillDetached = len(h.Detached())
	h.Close()
	res.Ms = float64(time.Since(t0).Microseconds()) / 1000
	return res, err
}
