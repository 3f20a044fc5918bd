package faultinject_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/internal/faultinject"
)

type quiet struct{}

func (quiet) Start(context.Context, *driver.Service) error { return nil }
func (quiet) Stop(*driver.Service)                         {}

// A driver's Start fails at the step, as if the device refused.
func Example() {
	in := faultinject.New()
	in.MustAdd(faultinject.Rule{Point: faultinject.Start, Action: faultinject.Fail(errors.New("device refused"))})
	uninstall, err := in.Install()
	if err != nil {
		panic(err)
	}
	defer uninstall()

	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	defer r.Close(context.Background())
	_ = r.RegisterPersonality(driver.Personality{Name: "quiet", ProviderClass: "Nub", New: func() driver.Driver { return quiet{} }})
	nub := r.NewNub("Nub", "n", driver.Properties{})
	_ = r.Publish(nil, nub)

	active := 0
	for _, c := range nub.Clients() {
		if c.State().Active {
			active++
		}
	}
	fmt.Println("drivers active:", active)
	for _, s := range in.Stats().Sites {
		fmt.Println("fired at:", s.Point, s.Target.Class())
	}
	// Output:
	// drivers active: 0
	// fired at: start quiet
}
