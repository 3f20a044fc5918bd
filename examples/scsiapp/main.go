// Command scsiapp is a small application of the kind drvkit serves: it
// opens a block device driver (usbstorage or sg) through the drvkit daemon,
// asks who the device is, reads a block, and — with -hold — keeps the device
// open, printing the notifications the daemon sends, until the device goes
// away or the program is killed. make demo kills it with SIGKILL to show that
// the daemon cleans up after a crashed application.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/userclient"
)

func main() {
	socket := flag.String("socket", os.Getenv("DRVCTL_SOCKET"), "daemon socket `path`")
	driverName := flag.String("driver", "usbstorage", "open an instance of this `driver`")
	lba := flag.Uint64("lba", 0, "block to read")
	hold := flag.Bool("hold", false, "keep the device open and print notifications until it goes away")
	wait := flag.Duration("wait", 0, "if no such device is there yet, wait this `long` for one to be plugged and started")
	flag.Parse()
	if err := run(*socket, *driverName, *lba, *hold, *wait); err != nil {
		fmt.Fprintln(os.Stderr, "scsiapp:", err)
		os.Exit(1)
	}
}

func run(socket, driverName string, lba uint64, hold bool, wait time.Duration) error {
	if socket == "" {
		return errors.New("no socket: use -socket or DRVCTL_SOCKET")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := userclient.Dial(ctx, socket, userclient.WithClientName("scsiapp"))
	if err != nil {
		return err
	}
	defer c.Close()
	var h *userclient.Handle
	if wait > 0 {
		// The daemon waits for the device and opens it once its driver
		// has started: no polling here.
		fmt.Printf("scsiapp[%d]: waiting up to %v for %s\n", os.Getpid(), wait, driverName)
		wctx, wcancel := context.WithTimeout(context.Background(), wait)
		h, err = c.OpenWait(wctx, userclient.Match{Personality: driverName})
		wcancel()
	} else {
		h, err = c.Open(ctx, userclient.Match{Personality: driverName})
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", driverName, err)
	}
	out, err := h.Call(ctx, blockdev.MethodInquiry, nil)
	if err != nil {
		return fmt.Errorf("inquiry: %w", err)
	}
	inq, err := blockdev.DecodeInquiry(out)
	if err != nil {
		return err
	}
	if out, err = h.Call(ctx, blockdev.MethodCapacity, nil); err != nil {
		return fmt.Errorf("capacity: %w", err)
	}
	capa, err := blockdev.DecodeCapacity(out)
	if err != nil {
		return err
	}
	fmt.Printf("scsiapp[%d]: opened %s: %s %s rev %s, %d blocks of %d bytes\n", os.Getpid(), driverName,
		inq.Vendor, inq.Product, inq.Revision, capa.Blocks, capa.BlockSize)
	block, err := h.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(lba, 1))
	if err != nil {
		return fmt.Errorf("read block %d: %w", lba, err)
	}
	text := strings.TrimRight(string(block), "\x00")
	if printable(text) {
		fmt.Printf("scsiapp[%d]: block %d: %q\n", os.Getpid(), lba, strings.TrimSpace(text))
	} else {
		fmt.Printf("scsiapp[%d]: block %d:\n%s", os.Getpid(), lba, hex.Dump(block[:64]))
	}
	if !hold {
		return h.Close()
	}
	fmt.Printf("scsiapp[%d]: holding the device open\n", os.Getpid())
	for n := range h.Notifications() {
		fmt.Printf("scsiapp[%d]: notification %s %s\n", os.Getpid(), n.Type, n.Detail)
		if n.Type == userclient.ServiceIsTerminated {
			return nil
		}
	}
	return c.Err()
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 && r != '\n' || r > 0x7e {
			return false
		}
	}
	return true
}
