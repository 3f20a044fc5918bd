package driver_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/drvkit/drvkit/driver"
)

// scsiDisk is a small SCSI-like driver: it matches SCSI nubs of peripheral
// type 0 (a disk), answers INQUIRY and READ CAPACITY for user clients, and
// keeps its media state in a monitored value that a job updates.
type scsiDisk struct {
	blocks *driver.Monitored[uint64]
}

func (d *scsiDisk) Start(ctx context.Context, s *driver.Service) error {
	d.blocks = driver.NewMonitored[uint64](nil, 0)
	done := make(chan struct{})
	// READ CAPACITY runs asynchronously, as a job owned by the service.
	err := s.Submit(driver.Job{Key: "capacity",
		Run: func(ctx context.Context) error {
			d.blocks.Store(2097152) // 1 GiB of 512-byte blocks
			return nil
		},
		Free: func() { close(done) }})
	if err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *scsiDisk) Stop(s *driver.Service) {}

func (d *scsiDisk) Methods() map[string]driver.Method {
	return map[string]driver.Method{
		"inquiry": func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			v, _ := s.Properties().String("vendor")
			m, _ := s.Properties().String("model")
			return []byte(v + " " + m), nil
		},
		"capacity": func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			return binary.BigEndian.AppendUint64(nil, d.blocks.Load()), nil
		},
	}
}

// Example embeds a registry in an application: a SCSI disk appears, an
// application opens it through a user client and calls the driver, then
// the disk is unplugged and everything is torn down in contract order.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	var steps []string
	stopTrace := r.SubscribeLifecycle(func(e driver.LifecycleEvent) {
		if e.Step != driver.StepFree { // frees may come in any order
			steps = append(steps, e.Step.String()+" "+e.Name)
		}
	})
	defer stopTrace()

	_ = r.RegisterPersonality(driver.Personality{
		Name: "sd", Class: "SCSIDisk", ProviderClass: "SCSIDevice",
		Match: []driver.Match{driver.MatchValue("type", 0)},
		New:   func() driver.Driver { return &scsiDisk{} },
	})

	// The hotplug side publishes a nub for the new device.
	nub := r.NewNub("SCSIDevice", "0:0:0:0", driver.NewProperties(map[string]any{
		"type": 0, "vendor": "QEMU", "model": "QEMU HARDDISK"}))
	if err := r.Publish(nil, nub); err != nil {
		fmt.Println(err)
		return
	}
	disk := nub.Clients()[0]

	// An application opens the disk through a user client.
	uc, _ := r.AttachClient(disk, "SCSIDiskUserClient", "app", nil)
	_ = disk.Open(uc, driver.OpenOptions{Exclusive: true})
	id, _ := disk.Call(ctx, "inquiry", nil)
	capb, _ := disk.Call(ctx, "capacity", nil)
	fmt.Printf("%s, %d blocks\n", id, binary.BigEndian.Uint64(capb))

	// Unplug: terminate the nub and wait until everything is freed.
	if err := nub.TerminateSync(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println(strings.Join(steps, "\n"))
	// Output:
	// QEMU QEMU HARDDISK, 2097152 blocks
	// publish 0:0:0:0
	// attach 0:0:0:0
	// attach sd
	// start sd
	// attach app
	// terminate 0:0:0:0
	// terminate sd
	// terminate app
	// willTerminate 0:0:0:0
	// willTerminate sd
	// willTerminate app
	// didTerminate app
	// didTerminate sd
	// didTerminate 0:0:0:0
	// stop app
	// detach app
	// stop sd
	// detach sd
	// stop 0:0:0:0
	// detach 0:0:0:0
}

// mediaWatcher forwards what its provider says to a channel an application
// reads; the send never blocks (a full channel drops), so the handler may
// run on the sender's goroutine.
type mediaWatcher struct{ events chan string }

func (w *mediaWatcher) Message(_ *driver.Service, m driver.Message) error {
	if m.Type >= driver.MessageDriverDefined {
		select {
		case w.events <- fmt.Sprint(m.Data):
		default:
		}
	}
	return nil
}

// MessageInline promises a Message that neither blocks nor calls into the
// registry or a driver.
func (w *mediaWatcher) MessageInline() {}

// ExampleInlineMessageHandler: a client whose handler never blocks gets its
// provider's messages on the sender's goroutine, before MessageClients
// returns (when nothing is queued for it), instead of through the mail
// pool.
func ExampleInlineMessageHandler() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	nub := r.NewNub("SCSIDevice", "0:0:0:1", driver.NewProperties(nil))
	_ = r.Publish(nil, nub)
	w := &mediaWatcher{events: make(chan string, 1)}
	if _, err := r.AttachClient(nub, "MediaWatcher", "app", w); err != nil {
		fmt.Println(err)
		return
	}
	nub.MessageClients(driver.MessageDriverDefined, "media changed")
	select {
	case e := <-w.events: // already there: delivered before MessageClients returned
		fmt.Println(e)
	default:
		fmt.Println("not delivered yet")
	}
	_ = nub.TerminateSync(ctx)
	// Output: media changed
}

// lineWriter is an inline handler that leaves its output to the fan-out's
// batch: the batch's lines go out together, as a server's notifications
// go out in one system call.
type lineWriter struct{ name string }

type lines struct{ out []string }

func (l *lines) FlushBatch() {
	slices.Sort(l.out) // the clients' order is not set
	fmt.Println(strings.Join(l.out, "; "))
}

func (w *lineWriter) Message(_ *driver.Service, m driver.Message) error {
	if m.Type != driver.MessageDriverDefined {
		return nil
	}
	line := fmt.Sprintf("%s: %v", w.name, m.Data)
	if m.Batch == nil { // from the mailbox: write at once
		fmt.Println(line)
		return nil
	}
	l := m.Batch.Join("lines", func() driver.BatchFlusher { return &lines{} }).(*lines)
	l.out = append(l.out, line)
	return nil
}

func (*lineWriter) MessageInline() {}

// ExampleBatch: the inline handlers of one fan-out share what they leave
// to its batch, which MessageClients flushes before it returns.
func ExampleBatch() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	nub := r.NewNub("SCSIDevice", "0:0:0:1", driver.NewProperties(nil))
	_ = r.Publish(nil, nub)
	for _, name := range []string{"app1", "app2"} {
		if _, err := r.AttachClient(nub, "LineWriter", name, &lineWriter{name: name}); err != nil {
			fmt.Println(err)
			return
		}
	}
	nub.MessageClients(driver.MessageDriverDefined, "media changed")
	_ = nub.TerminateSync(ctx)
	// Output: app1: media changed; app2: media changed
}
