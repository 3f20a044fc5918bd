package reliability

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/verify"
)

// The topology: a USB stick at port 2-1 with a mass-storage interface
// (usbstorage on the USB fake, kernel driver usb-storage detached while it
// runs) and a vendor-specific one (vendord: Probe, the terminate hooks,
// jobs, a client method). The public Driver Verifier (package verify)
// runs it; each driver instance gets two applications doing I/O.
const (
	vendorName  = "vendord"
	vendorClass = "VendorDriver"
	startJobs   = 6 // job concurrency is 4: two stay queued
)

var discard = slog.New(slog.DiscardHandler)

// stick is the explorer's device model.
func stick() *verify.USB {
	return &verify.USB{Vendor: 0x46f4, Product: 1, Serial: "EXPLORE", Disk: &verify.DiskSpec{Blocks: 64, BlockSize: 512},
		Extra: []string{"ff/00/00"}}
}

// vendorChecks collects what vendord saw break, from the driver's side;
// the run's Check takes it (runs are serial).
var vendorChecks struct {
	sync.Mutex
	violations []string
	submitted  int64
	freed      int64
}

func vendorViolate(format string, args ...any) {
	vendorChecks.Lock()
	vendorChecks.violations = append(vendorChecks.violations, fmt.Sprintf(format, args...))
	vendorChecks.Unlock()
}

// takeVendorChecks is the run's extra check: vendord's own view, and
// every job it submitted freed.
func takeVendorChecks(*verify.Trial) []verify.Problem {
	vendorChecks.Lock()
	defer vendorChecks.Unlock()
	var ps []verify.Problem
	for _, v := range vendorChecks.violations {
		ps = append(ps, verify.Problem{Kind: "contract", Text: v})
	}
	if vendorChecks.submitted != vendorChecks.freed {
		ps = append(ps, verify.Problem{Kind: "job-free", Text: fmt.Sprintf("vendord: %d jobs submitted, %d freed", vendorChecks.submitted, vendorChecks.freed)})
	}
	vendorChecks.violations, vendorChecks.submitted, vendorChecks.freed = nil, 0, 0
	return ps
}

var vendorEntry = drivertable.Entry{
	Name: vendorName, Summary: "the explorer's test driver",
	Personalities: func(*drivertable.Resources) ([]driver.Personality, error) {
		return []driver.Personality{{
			Name: vendorName, Class: vendorClass, ProviderClass: usbstorage.NubClass, Score: 5,
			Match: []driver.Match{driver.MatchFunc(func(p driver.Properties) bool {
				c, ok := p.Int(usbstorage.PropInterfaceClass)
				return ok && c == 0xff
			})},
			New: func() driver.Driver { return &vendorDriver{} },
		}}, nil
	},
}

// vendorDriver checks, from the driver's side, what the contract promises:
// no job runs and no method or callback arrives after Stop, Stop sees no
// running job, every job's Free runs exactly once.
type vendorDriver struct {
	stopped atomic.Bool
	inRun   atomic.Int32
}

var (
	_ driver.Driver         = (*vendorDriver)(nil)
	_ driver.Prober         = (*vendorDriver)(nil)
	_ driver.WillTerminater = (*vendorDriver)(nil)
	_ driver.DidTerminater  = (*vendorDriver)(nil)
	_ driver.ClientMethods  = (*vendorDriver)(nil)
)

func (d *vendorDriver) Probe(ctx context.Context, s *driver.Service) (int, bool) { return 10, true }

func (d *vendorDriver) Start(ctx context.Context, s *driver.Service) error {
	for i := range startJobs {
		// Four wait for cancellation (running at Stop), two stay queued.
		_ = d.submit(s, "", time.Duration(i)*time.Hour)
	}
	return nil
}

func (d *vendorDriver) submit(s *driver.Service, key string, dur time.Duration) error {
	vendorChecks.Lock()
	vendorChecks.submitted++
	vendorChecks.Unlock()
	var freed atomic.Int32
	return s.Submit(driver.Job{Key: key,
		Run: func(ctx context.Context) error {
			if d.stopped.Load() {
				vendorViolate("%s: job ran after Stop", s)
			}
			d.inRun.Add(1)
			defer d.inRun.Add(-1)
			t := time.NewTimer(dur)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			return nil
		},
		Free: func() {
			if freed.Add(1) != 1 {
				vendorViolate("%s: job Free ran twice", s)
			}
			vendorChecks.Lock()
			vendorChecks.freed++
			vendorChecks.Unlock()
		}})
}

func (d *vendorDriver) WillTerminate(s *driver.Service) {
	if d.stopped.Load() {
		vendorViolate("%s: WillTerminate after Stop", s)
	}
}

func (d *vendorDriver) DidTerminate(s *driver.Service) {
	if d.stopped.Load() {
		vendorViolate("%s: DidTerminate after Stop", s)
	}
}

func (d *vendorDriver) Stop(s *driver.Service) {
	if n := d.inRun.Load(); n > 0 {
		vendorViolate("%s: Stop with %d job(s) running", s, n)
	}
	if d.stopped.Swap(true) {
		vendorViolate("%s: Stop twice", s)
	}
}

func (d *vendorDriver) Methods() map[string]driver.Method {
	return map[string]driver.Method{
		"work": func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			if d.stopped.Load() {
				vendorViolate("%s: method called after Stop", s)
			}
			return in, d.submit(s, "work", 200*time.Microsecond)
		},
	}
}
