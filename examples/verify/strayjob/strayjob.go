// Package strayjob is DESIGN.md's Erlang driver story, on purpose: a SCSI
// disk driver runs its asynchronous work on a queue of its own. Stop does
// not cancel or drain it, so a job outlives Stop; each job keeps its owner
// alive with a tagged reference that its free hook drops, and the worker
// skips the free hook when the job fails because its owner died (the
// device vanished, the transport closed under it) — the reference leaks.
//
// `go test ./examples/verify/strayjob` shows the Driver Verifier finding
// it, with the culprit and a replay command. Fixed is the same driver on
// drvkit's work queue (Service.Submit), which cancels jobs at Stop and
// runs every free hook exactly once.
package strayjob

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/sg"
)

// Class of the driver; MethodRefresh queues a job that reads block 0.
const (
	Class         = "ErlangDisk"
	MethodRefresh = "refresh"
)

// Entry is the buggy driver's table entry; Fixed is the corrected one.
var (
	Entry = entry("strayjob", false)
	Fixed = entry("strayjob-fixed", true)
)

func entry(name string, fixed bool) drivertable.Entry {
	return drivertable.Entry{
		Name: name, Summary: "a SCSI disk driver whose jobs outlive Stop", Needs: []string{sg.OpenerKey.Name()},
		Personalities: func(r *drivertable.Resources) ([]driver.Personality, error) {
			open, err := sg.OpenerKey.From(r)
			if err != nil {
				return nil, err
			}
			return []driver.Personality{{Name: name, Class: Class, ProviderClass: sg.NubClass,
				Match: []driver.Match{driver.MatchFunc(func(p driver.Properties) bool {
					n, ok := p.String(sg.PropSGNode)
					return ok && n != ""
				})},
				New: func() driver.Driver { return &Driver{open: open, fixed: fixed} }}}, nil
		},
	}
}

// Driver refreshes a cached block 0 in the background.
type Driver struct {
	open  sg.Opener
	fixed bool
	dev   atomic.Pointer[scsi.Device]
	jobs  chan *job // the buggy driver's own queue
	mu    sync.Mutex
	block []byte
}

type job struct {
	owner *driver.Service
	run   func(ctx context.Context) error
	free  func()
}

func (j *job) String() string { return "strayjob refresh" }

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.ClientMethods = (*Driver)(nil)
)

// Start opens the sg node and, in the buggy driver, starts its worker.
func (d *Driver) Start(ctx context.Context, s *driver.Service) error {
	provs := s.Providers()
	if len(provs) == 0 {
		return errors.New("no provider nub")
	}
	node, _ := provs[0].Properties().String(sg.PropSGNode)
	t, err := d.open(node)
	if err != nil {
		return err
	}
	dev := scsi.NewDevice(t)
	if err := s.Manage(dev); err != nil {
		return err
	}
	d.dev.Store(dev)
	if !d.fixed {
		d.jobs = make(chan *job, 16)
		workers.Store(d, struct{}{})
		running.Add(1)
		go d.worker()
	}
	return nil
}

// Stop forgets the device. The buggy driver leaves its worker and its
// queued jobs running.
func (d *Driver) Stop(*driver.Service) { d.dev.Store(nil) }

// Methods: refresh queues a read of block 0.
func (d *Driver) Methods() map[string]driver.Method {
	return map[string]driver.Method{MethodRefresh: d.refresh}
}

func (d *Driver) refresh(ctx context.Context, s *driver.Service, _ []byte) ([]byte, error) {
	dev := d.dev.Load()
	if dev == nil {
		return nil, driver.ErrNotActive
	}
	read := func(ctx context.Context) error {
		// A refresh takes a moment: block 0 twice, a millisecond apart,
		// until both reads agree (a real driver's settle loop).
		buf := make([]byte, 512)
		if _, err := dev.Read(ctx, 0, buf); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
		if _, err := dev.Read(ctx, 0, buf); err != nil {
			return err
		}
		d.mu.Lock()
		d.block = buf
		d.mu.Unlock()
		return nil
	}
	if d.fixed {
		return nil, s.Submit(driver.Job{Key: "refresh", Run: read})
	}
	d.queue(s, &job{run: read})
	return nil, nil
}

// queue hands j to the worker. The job keeps its owner alive from here
// until it has run, as an IOKit driver retains what it hands to another
// thread; its free hook drops that reference.
func (d *Driver) queue(s *driver.Service, j *job) {
	j.owner = s
	s.TaggedRetain(j) // BUG: released by the free hook, which is skipped when the owner died
	j.free = func() { j.owner.TaggedRelease(j) }
	select {
	case d.jobs <- j:
	default: // queue full: drop it
		j.free()
	}
}

// worker runs the queued jobs, outliving Stop.
func (d *Driver) worker() {
	defer running.Done()
	for j := range d.jobs {
		if err := j.run(context.Background()); err != nil {
			skipped.Store(j, struct{}{})
			continue // the owner died (no device, transport closed): no free hook
		}
		j.free()
	}
}

// workers and skipped let a test that shows the bug end clean (Cleanup).
var (
	workers, skipped sync.Map
	running          sync.WaitGroup
)

// Cleanup ends the buggy drivers' workers and runs the free hooks they
// skipped: for tests that show the bug, then must leave nothing behind.
func Cleanup() {
	workers.Range(func(k, _ any) bool {
		close(k.(*Driver).jobs)
		workers.Delete(k)
		return true
	})
	running.Wait()
	skipped.Range(func(k, _ any) bool {
		k.(*job).free()
		skipped.Delete(k)
		return true
	})
}
