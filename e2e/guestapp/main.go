// Command e2e-app is the application the drvctl scenarios of the end-to-end
// tests run inside the QEMU guest: a drvkit user client, as scsiapp is, that
// reports what happens to it as JSON lines the host asserts on.
//
//	e2e-app -socket S -driver usbstorage [-service ID] [-write LBA -pattern P] [-read LBA]
//	        [-read-loop LBA [-depth N] [-blocks N]] [-hold [-close-after FILE]] [-status FILE]
//	e2e-app -socket S -driver hidkbd -hid-read [-service ID] [-leds BITS] [-status FILE]
//	e2e-app -watch-dir DIR -status FILE
//
// In that order: it opens an instance of the driver, asks INQUIRY and the
// capacity, writes the pattern at LBA, reads LBA once, then with -read-loop
// reads until a read fails, with -depth reads outstanding as a storage
// application keeps a queue, and reports each reader's error (whether it
// is ErrNoDevice: the device vanished under the read, or ErrTerminated: the
// read began after drvkit had terminated the service), and with -hold keeps the device open, reporting every
// notification, until ServiceIsRequestingClose; it closes then, or once
// the file -close-after names exists (the host decides when: it can look
// at the daemon while the device is still held). Every line goes to standard output and, with -status, is
// appended to FILE as well, so the host can follow a program still running.
//
// With -hid-read it opens a keyboard instead (hidkbd's user client) and
// waits for input reports with hidkbd's "read" method, one after the
// other, reporting each ("report": its sequence number, the report in hex,
// the keys down) with what "keys" says was typed so far ("keys"), until a
// read fails (the keyboard was unplugged: ErrNoDevice); then it closes.
// With -leds it first sets the keyboard's LEDs (hidkbd's "leds": an
// output report through hidraw). Every notification is reported as it
// comes ("notification", with its cause): a driver that runs in a process
// of its own and crashed terminates its service with the cause "crashed".
//
// With -watch-dir it reports every entry created in a directory (inotify)
// until it is killed: the host's record of /dev nodes that appear, even
// for a moment.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/userclient"
)

// Line is one report. Only the fields an event uses are set.
type Line struct {
	Event string `json:"event"`
	Pid   int    `json:"pid"`

	Service     uint64 `json:"service,omitempty"`
	Client      uint64 `json:"client,omitempty"`
	Class       string `json:"class,omitempty"`
	Personality string `json:"personality,omitempty"`

	Vendor    string `json:"vendor,omitempty"`
	Product   string `json:"product,omitempty"`
	Revision  string `json:"revision,omitempty"`
	Blocks    uint64 `json:"blocks,omitempty"`
	BlockSize uint32 `json:"block_size,omitempty"`

	LBA   uint64 `json:"lba,omitempty"`
	Data  string `json:"data,omitempty"`
	Reads int    `json:"reads,omitempty"`

	Type  string `json:"type,omitempty"`
	Cause string `json:"cause,omitempty"` // a notification's cause ("crashed", "provider", …)
	Error string `json:"error,omitempty"`
	// MonoNs is the guest's CLOCK_MONOTONIC when a -read-loop reader's
	// read failed: the clock of the agent's uevents and of drvctl
	// monitor's times, so the host can time the failure against them.
	MonoNs     int64 `json:"mono_ns,omitempty"`
	NoDevice   bool  `json:"no_device,omitempty"`
	Terminated bool  `json:"terminated,omitempty"`

	Seq     uint64 `json:"seq,omitempty"`
	Pressed []int  `json:"pressed,omitempty"`
	Events  int    `json:"events,omitempty"`
}

type reporter struct {
	mu     sync.Mutex
	status *os.File
}

func (r *reporter) emit(l Line) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l.Pid = os.Getpid()
	b, _ := json.Marshal(l)
	b = append(b, '\n')
	os.Stdout.Write(b)
	if r.status != nil {
		r.status.Write(b) // O_APPEND: one write per line
	}
}

func main() {
	socket := flag.String("socket", os.Getenv("DRVCTL_SOCKET"), "daemon socket `path`")
	drv := flag.String("driver", "usbstorage", "open an instance of this `driver` (personality)")
	write := flag.Int64("write", -1, "write the pattern at this `lba` (-1: no write)")
	pattern := flag.String("pattern", "", "the `text` written, zero-padded to a block")
	read := flag.Int64("read", -1, "read this `lba` once (-1: no read)")
	loop := flag.Int64("read-loop", -1, "read this `lba` until a read fails (-1: no loop)")
	depth := flag.Int("depth", 1, "with -read-loop: `reads` outstanding at once")
	blocks := flag.Int("blocks", 1, "with -read-loop: `blocks` per read (larger reads keep the bus busy, so an unplug finds a transfer in flight)")
	hold := flag.Bool("hold", false, "hold the device open until it requests close")
	closeAfter := flag.String("close-after", "", "with -hold: after ServiceIsRequestingClose, keep the device open until this `file` exists")
	statusPath := flag.String("status", "", "also append every line to this `file`")
	hidRead := flag.Bool("hid-read", false, "open a keyboard (hidkbd) and report its input reports until a read fails")
	leds := flag.Int("leds", -1, "with -hid-read: first set the keyboard's LEDs to these `bits` (-1: no)")
	service := flag.Uint64("service", 0, "open the instance with this service `id` (0: any of the driver)")
	watch := flag.String("watch-dir", "", "report every entry created in this `directory` until killed (no daemon needed)")
	flag.Parse()

	r := &reporter{}
	if *statusPath != "" {
		f, err := os.OpenFile(*statusPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e-app:", err)
			os.Exit(2)
		}
		r.status = f
	}
	do := func() error {
		return run(r, *socket, *drv, *service, *write, *pattern, *read, *loop, *depth, *blocks, *hold, *closeAfter)
	}
	if *hidRead {
		do = func() error { return runHID(r, *socket, *drv, *service, *leds) }
	}
	if *watch != "" {
		do = func() error { return watchDir(r, *watch) }
	}
	if err := do(); err != nil {
		r.emit(Line{Event: "error", Error: err.Error(), NoDevice: errors.Is(err, userclient.ErrNoDevice),
			Terminated: errors.Is(err, userclient.ErrTerminated)})
		os.Exit(1)
	}
	r.emit(Line{Event: "exit"})
}

func run(r *reporter, socket, drv string, service uint64, write int64, pattern string, read, loop int64, depth, blocks int, hold bool, closeAfter string) error {
	if socket == "" {
		return errors.New("no socket: use -socket or DRVCTL_SOCKET")
	}
	ctx := context.Background()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := userclient.Dial(dctx, socket, userclient.WithClientName("e2e-app"))
	if err != nil {
		return err
	}
	defer c.Close()
	h, err := c.Open(dctx, userclient.Match{Personality: drv, ID: service})
	if err != nil {
		return fmt.Errorf("open %s: %w", drv, err)
	}
	info := h.Service()
	r.emit(Line{Event: "opened", Service: info.ID, Client: h.ClientID(), Class: info.Class, Personality: info.Personality})

	call := func(method string, in []byte) ([]byte, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return h.Call(cctx, method, in)
	}
	out, err := call(blockdev.MethodInquiry, nil)
	if err != nil {
		return fmt.Errorf("inquiry: %w", err)
	}
	inq, err := blockdev.DecodeInquiry(out)
	if err != nil {
		return err
	}
	if out, err = call(blockdev.MethodCapacity, nil); err != nil {
		return fmt.Errorf("capacity: %w", err)
	}
	capa, err := blockdev.DecodeCapacity(out)
	if err != nil {
		return err
	}
	r.emit(Line{Event: "inquiry", Vendor: inq.Vendor, Product: inq.Product, Revision: inq.Revision,
		Blocks: capa.Blocks, BlockSize: capa.BlockSize})

	if write >= 0 {
		block := make([]byte, capa.BlockSize)
		copy(block, pattern)
		if _, err := call(blockdev.MethodWrite, blockdev.EncodeWrite(uint64(write), block)); err != nil {
			return fmt.Errorf("write block %d: %w", write, err)
		}
		r.emit(Line{Event: "wrote", LBA: uint64(write)})
	}
	if read >= 0 {
		b, err := call(blockdev.MethodRead, blockdev.EncodeRead(uint64(read), 1))
		if err != nil {
			return fmt.Errorf("read block %d: %w", read, err)
		}
		r.emit(Line{Event: "read", LBA: uint64(read), Data: string(bytes.TrimRight(b, "\x00"))})
	}
	if loop >= 0 {
		var wg sync.WaitGroup
		var once sync.Once
		for range max(depth, 1) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					_, err := call(blockdev.MethodRead, blockdev.EncodeRead(uint64(loop), uint32(max(blocks, 1))))
					if err != nil {
						r.emit(Line{Event: "read-error", LBA: uint64(loop), Reads: n, Error: err.Error(), MonoNs: monoNow(),
							NoDevice: errors.Is(err, userclient.ErrNoDevice), Terminated: errors.Is(err, userclient.ErrTerminated)})
						return
					}
					once.Do(func() { r.emit(Line{Event: "reading", LBA: uint64(loop)}) })
				}
			}()
		}
		wg.Wait()
		// The service is going: a well-behaved application closes.
		if err := h.Close(); err != nil {
			return err
		}
		r.emit(Line{Event: "closed"})
		return nil
	}
	if !hold {
		if err := h.Close(); err != nil {
			return err
		}
		r.emit(Line{Event: "closed"})
		return nil
	}
	r.emit(Line{Event: "holding"})
	for n := range h.Notifications() {
		r.emit(Line{Event: "notification", Type: string(n.Type), Service: n.Service, Error: n.Detail})
		if n.Type == userclient.ServiceIsRequestingClose {
			if closeAfter != "" {
				r.emit(Line{Event: "waiting", Data: closeAfter})
				for {
					if _, err := os.Stat(closeAfter); err == nil {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			if err := h.Close(); err != nil {
				return err
			}
			r.emit(Line{Event: "closed"})
			return nil
		}
	}
	return fmt.Errorf("notifications ended before ServiceIsRequestingClose: %v", c.Err())
}

// runHID follows a keyboard's input reports through hidkbd's user client.
func runHID(r *reporter, socket, drv string, service uint64, leds int) error {
	if socket == "" {
		return errors.New("no socket: use -socket or DRVCTL_SOCKET")
	}
	ctx := context.Background()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := userclient.Dial(dctx, socket, userclient.WithClientName("e2e-app"))
	if err != nil {
		return err
	}
	defer c.Close()
	h, err := c.Open(dctx, userclient.Match{Personality: drv, ID: service})
	if err != nil {
		return fmt.Errorf("open %s: %w", drv, err)
	}
	info := h.Service()
	r.emit(Line{Event: "opened", Service: info.ID, Client: h.ClientID(), Class: info.Class, Personality: info.Personality})
	notified := make(chan struct{})
	defer func() { _ = h.Close(); <-notified }() // the channel closes with the handle
	go func() {
		defer close(notified)
		for n := range h.Notifications() {
			r.emit(Line{Event: "notification", Type: string(n.Type), Service: n.Service, Cause: n.Cause, Error: n.Detail})
		}
	}()
	if leds >= 0 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := h.Call(cctx, hidkbd.MethodLEDs, []byte(fmt.Sprintf(`{"leds":%d}`, leds)))
		cancel()
		if err != nil {
			return fmt.Errorf("leds: %w", err)
		}
		r.emit(Line{Event: "leds", Data: strconv.Itoa(leds)})
	}
	r.emit(Line{Event: "reading"})
	var after uint64
	for {
		in, _ := json.Marshal(map[string]uint64{"after": after})
		// No deadline: a keyboard may stay silent for as long as the
		// host likes; the unplug ends the read.
		out, err := h.Call(ctx, hidkbd.MethodRead, in)
		if err != nil {
			r.emit(Line{Event: "read-error", Seq: after, Error: err.Error(),
				NoDevice: errors.Is(err, userclient.ErrNoDevice), Terminated: errors.Is(err, userclient.ErrTerminated)})
			break
		}
		var rep hidkbd.ReadReply
		if err := json.Unmarshal(out, &rep); err != nil {
			return fmt.Errorf("read reply %q: %w", out, err)
		}
		if rep.Seq <= after {
			return fmt.Errorf("read after %d answered seq %d", after, rep.Seq)
		}
		after = rep.Seq
		r.emit(Line{Event: "report", Seq: rep.Seq, Data: rep.Report, Pressed: rep.Pressed})
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err = h.Call(cctx, hidkbd.MethodKeys, nil)
		cancel()
		if err != nil {
			r.emit(Line{Event: "keys-error", Seq: after, Error: err.Error(),
				NoDevice: errors.Is(err, userclient.ErrNoDevice), Terminated: errors.Is(err, userclient.ErrTerminated)})
			break
		}
		var keys hidkbd.KeysReply
		if err := json.Unmarshal(out, &keys); err != nil {
			return fmt.Errorf("keys reply %q: %w", out, err)
		}
		r.emit(Line{Event: "keys", Seq: after, Data: keys.Text, Events: keys.Events})
	}
	// The read failed because the service is going: hear its
	// ServiceIsTerminated (and its cause) before closing.
	select {
	case <-h.Terminated():
	case <-time.After(10 * time.Second):
	}
	if err := h.Close(); err != nil {
		return err
	}
	r.emit(Line{Event: "closed"})
	return nil
}
