package hidkbd_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
)

// A keyboard on the simulated hidraw backend: the nub hotplug/hidbus would
// publish for it is published by hand, hidkbd matches it and starts, the
// keyboard types "Hi", and an application reads what was typed and sets
// the caps lock LED through the driver's methods.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	defer r.Close(ctx)
	backend := hidsim.New()
	kbd := backend.Plug("/dev/hidraw0", hidsim.Spec{Info: hid.Info{Bus: hid.BusUSB, Vendor: 0x046d, Product: 0xc31c}})
	if err := r.RegisterPersonality(hidkbd.Personality(backend)); err != nil {
		fmt.Println(err)
		return
	}

	nub := r.NewNub(hidkbd.NubClass, "0003:046D:C31C.0001", driver.NewProperties(map[string]any{
		hidkbd.PropHidraw:    "/dev/hidraw0",
		hidkbd.PropUsagePage: uint64(hid.UsagePageGenericDesktop),
		hidkbd.PropUsage:     uint64(hid.UsageKeyboard),
	}))
	if err := r.Publish(nil, nub); err != nil {
		fmt.Println(err)
		return
	}
	drv := nub.Clients()[0]
	fmt.Println(drv.Class(), "started on", nub.Name())

	// Boot-protocol reports: modifiers, reserved, key codes.
	for _, rep := range [][]byte{
		{0x02, 0, 0x0b, 0, 0, 0, 0, 0}, // shift + h
		{0, 0, 0, 0, 0, 0, 0, 0},       // released
		{0, 0, 0x0c, 0, 0, 0, 0, 0},    // i
		{0, 0, 0, 0, 0, 0, 0, 0},
	} {
		kbd.Input(rep)
	}
	// "read" waits for a report past a sequence number: the fourth.
	out, err := drv.Call(ctx, hidkbd.MethodRead, []byte(`{"after":3}`))
	fmt.Println(string(out), err)
	out, _ = drv.Call(ctx, hidkbd.MethodKeys, nil)
	fmt.Println(string(out))

	_, err = drv.Call(ctx, hidkbd.MethodLEDs, []byte(`{"leds":2}`))
	fmt.Printf("leds: %v, the keyboard got % x\n", err, kbd.Outputs())

	// Unplugged: the device goes first, then the nub.
	kbd.Unplug()
	if err := nub.TerminateSyncWith(ctx, driver.CauseUnplug); err != nil {
		fmt.Println(err)
	}
	fmt.Println("services left besides the root:", len(r.Services())-1)
	// Output:
	// HIDKeyboard started on 0003:046D:C31C.0001
	// {"seq":4,"report":"0000000000000000","pressed":[]} <nil>
	// {"text":"Hi","events":4}
	// leds: <nil>, the keyboard got [00 02]
	// services left besides the root: 0
}
