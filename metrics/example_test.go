package metrics_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/metrics"
)

type stickDriver struct{}

func (stickDriver) Start(context.Context, *driver.Service) error { return nil }
func (stickDriver) Stop(*driver.Service)                         {}

// A daemon registers a Collector for its registry; here a stick is plugged
// and unplugged, and the scrape shows the services by class and state and
// the terminations by their root cause (the driver went because its
// device was unplugged).
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	defer r.Close(ctx)
	c := metrics.New(metrics.Config{Registry: r})
	defer c.Close()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		fmt.Println(err)
		return
	}

	_ = r.RegisterPersonality(driver.Personality{Name: "stick", Class: "ExampleStick", ProviderClass: "USBInterface",
		New: func() driver.Driver { return stickDriver{} }})
	nub := r.NewNub("USBInterface", "2-1:1.0", driver.Properties{})
	_ = r.Publish(nil, nub)
	printSamples(reg, "drvkit_services")

	_ = nub.TerminateSyncWith(ctx, driver.CauseUnplug)
	printSamples(reg, "drvkit_services", "drvkit_terminations_total")
	// Output:
	// drvkit_services{class="ExampleStick",state="active"} 1
	// drvkit_services{class="Root",state="active"} 1
	// drvkit_services{class="USBInterface",state="active"} 1
	// --
	// drvkit_services{class="Root",state="active"} 1
	// drvkit_terminations_total{cause="unplug",class="ExampleStick"} 1
	// drvkit_terminations_total{cause="unplug",class="USBInterface"} 1
	// --
}

// printSamples prints the samples of the named metrics, as Prometheus reads them.
func printSamples(g prometheus.Gatherer, names ...string) {
	out, err := testutil.GatherAndFormat(g, expfmt.TypeTextPlain, names...)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(l, "#") {
			fmt.Println(l)
		}
	}
	fmt.Println("--")
}
