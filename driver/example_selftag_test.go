package driver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount"
)

// camera keeps its provider for as long as it runs, as an IOKit driver
// does with provider->retain(): the reference is tagged with the driver's
// own service, so reports see an ownership edge camera → provider. The
// one in Stop pairs with it; a camera built with forget leaks it.
type camera struct{ forget bool }

func (c *camera) Start(_ context.Context, self *driver.Service) error {
	self.Providers()[0].TaggedRetain(self)
	return nil
}

func (c *camera) Stop(self *driver.Service) {
	if !c.forget {
		self.Providers()[0].TaggedRelease(self)
	}
}

var (
	reServiceID = regexp.MustCompile(`#\d+`)
	reLineNo    = regexp.MustCompile(`\.go:\d+`)
)

// ExampleService_TaggedRetain shows the self-tag idiom: the reference is
// an edge in WhyAlive, and a driver that forgets to release it is named by
// TerminateSync, which says what keeps its provider from being freed.
func ExampleService_TaggedRetain() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	defer r.Close(ctx)
	_ = r.RegisterPersonality(driver.Personality{Name: "camera", Class: "ExampleCamera", ProviderClass: "USBInterface",
		Match: []driver.Match{driver.MatchValue("idVendor", 0x046d)},
		New:   func() driver.Driver { return &camera{} }})
	_ = r.RegisterPersonality(driver.Personality{Name: "leaky", Class: "LeakyCamera", ProviderClass: "USBInterface",
		Match: []driver.Match{driver.MatchValue("idVendor", 0xdead)},
		New:   func() driver.Driver { return &camera{forget: true} }})

	good := r.NewNub("USBInterface", "1-1:1.0", driver.NewProperties(map[string]any{"idVendor": 0x046d}))
	_ = r.Publish(nil, good)
	for _, c := range refcount.WhyAlive(good.RefObject()) {
		fmt.Println("why alive:", reServiceID.ReplaceAllString(c.String(), "#N"))
	}
	fmt.Println("unplug 1-1:", good.TerminateSyncWith(ctx, driver.CauseUnplug))

	bad := r.NewNub("USBInterface", "1-2:1.0", driver.NewProperties(map[string]any{"idVendor": 0xdead}))
	_ = r.Publish(nil, bad)
	leaky := bad.Clients()[0]
	short, stop := context.WithTimeout(ctx, 100*time.Millisecond)
	err := bad.TerminateSyncWith(short, driver.CauseUnplug)
	stop()
	fmt.Println("unplug 1-2 timed out:", errors.Is(err, context.DeadlineExceeded))
	for _, l := range strings.Split(fmt.Sprint(err), "\n") {
		if strings.Contains(l, "held by") { // what blocks it, and where the reference was taken
			fmt.Println(reLineNo.ReplaceAllString(reServiceID.ReplaceAllString(strings.TrimSpace(l), "#N"), ".go:N"))
		}
	}
	bad.TaggedRelease(leaky) // what the leaky driver's Stop should have done
	// Output:
	// why alive: "registry" → ExampleCamera#N → USBInterface#N (structural)
	// unplug 1-1: <nil>
	// unplug 1-2 timed out: true
	// USBInterface#N "1-2:1.0": held by LeakyCamera#N ×1 (retained at driver_test.(*camera).Start example_selftag_test.go:N)
}
