package server_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/userclient"
)

// echoDriver is a driver with one client method.
type echoDriver struct{}

func (echoDriver) Start(context.Context, *driver.Service) error { return nil }
func (echoDriver) Stop(*driver.Service)                         {}
func (echoDriver) Methods() map[string]driver.Method {
	return map[string]driver.Method{
		"echo": func(_ context.Context, _ *driver.Service, in []byte) ([]byte, error) { return in, nil },
	}
}

// A daemon serves its registry on a socket; an application dials it, opens
// a device and calls a driver method.
func Example() {
	ctx := context.Background()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	_ = r.RegisterPersonality(driver.Personality{Name: "EchoDriver", Class: "EchoDevice", ProviderClass: "EchoNub",
		New: func() driver.Driver { return echoDriver{} }})
	_ = r.Publish(nil, r.NewNub("EchoNub", "echo0", driver.Properties{}))

	dir, _ := os.MkdirTemp("", "uc")
	defer os.RemoveAll(dir)
	srv, err := userclient.Listen(userclient.NewRegistryBackend(r), userclient.Config{
		Path: filepath.Join(dir, "drvkit.sock"), GID: -1,
		Policy: userclient.Policy{Rules: []userclient.Rule{{AnyUser: true, Classes: []string{"EchoDevice"}}}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	// The application side.
	c, err := userclient.Dial(ctx, srv.Addr())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	h, err := c.Open(ctx, userclient.Match{Class: "EchoDevice"})
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := h.Call(ctx, "echo", []byte("hello, device"))
	fmt.Printf("%s %v\n", out, err)
	_, err = h.Call(ctx, "format", nil)
	fmt.Println(errors.Is(err, userclient.ErrNoMethod))
	fmt.Println(h.Close())
	// Output:
	// hello, device <nil>
	// true
	// <nil>
}

// waitDriver's method waits for its device until its context ends.
type waitDriver struct {
	echoDriver
	gaveUp chan error
}

func (d waitDriver) Methods() map[string]driver.Method {
	return map[string]driver.Method{
		"wait": func(ctx context.Context, _ *driver.Service, _ []byte) ([]byte, error) {
			<-ctx.Done() // a real driver: a transfer that honours ctx
			d.gaveUp <- ctx.Err()
			return nil, ctx.Err()
		},
	}
}

// An application that stops waiting for a call cancels the driver method
// too: its context is cancelled in the daemon, as when the device goes away.
func Example_cancel() {
	ctx := context.Background()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	d := waitDriver{gaveUp: make(chan error, 1)}
	_ = r.RegisterPersonality(driver.Personality{Name: "WaitDriver", Class: "WaitDevice", ProviderClass: "WaitNub",
		New: func() driver.Driver { return d }})
	_ = r.Publish(nil, r.NewNub("WaitNub", "wait0", driver.Properties{}))
	dir, _ := os.MkdirTemp("", "uc")
	defer os.RemoveAll(dir)
	srv, err := userclient.Listen(userclient.NewRegistryBackend(r), userclient.Config{
		Path: filepath.Join(dir, "drvkit.sock"), GID: -1,
		Policy: userclient.Policy{Rules: []userclient.Rule{{AnyUser: true, Classes: []string{"WaitDevice"}}}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	c, err := srv.Embed(ctx) // in process; over the socket it is the same
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	h, err := c.Open(ctx, userclient.Match{Class: "WaitDevice"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = h.Call(cctx, "wait", nil)
	fmt.Println("application:", err)
	fmt.Println("driver:", <-d.gaveUp)
	// Output:
	// application: userclient: call wait: context deadline exceeded
	// driver: context canceled
}

// An application started before its device waits for it: OpenWait returns
// once the device is plugged and its driver has started.
func ExampleClient_OpenWait() {
	ctx := context.Background()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	_ = r.RegisterPersonality(driver.Personality{Name: "EchoDriver", Class: "EchoDevice", ProviderClass: "EchoNub",
		New: func() driver.Driver { return echoDriver{} }})
	dir, _ := os.MkdirTemp("", "uc")
	defer os.RemoveAll(dir)
	srv, err := userclient.Listen(userclient.NewRegistryBackend(r), userclient.Config{Path: filepath.Join(dir, "drvkit.sock"), GID: -1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	c, err := userclient.Dial(ctx, srv.Addr())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	go func() {
		time.Sleep(10 * time.Millisecond) // the device arrives later
		_ = r.Publish(nil, r.NewNub("EchoNub", "echo0", driver.Properties{}))
	}()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	h, err := c.OpenWait(wctx, userclient.Match{Class: "EchoDevice"})
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := h.Call(ctx, "echo", []byte("there you are"))
	fmt.Printf("%s %v\n", out, err)
	fmt.Println(h.Close())
	// Output:
	// there you are <nil>
	// <nil>
}
