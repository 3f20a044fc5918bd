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
	"github.com/drvkit/drvkit/userclient/server"
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
	srv, err := server.Listen(server.NewRegistryBackend(r), server.Config{
		Path: filepath.Join(dir, "drvkit.sock"), GID: -1,
		Policy: server.Policy{Rules: []server.Rule{{AnyUser: true, Classes: []string{"EchoDevice"}}}},
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
	srv, err := server.Listen(server.NewRegistryBackend(r), server.Config{
		Path: filepath.Join(dir, "drvkit.sock"), GID: -1,
		Policy: server.Policy{Rules: []server.Rule{{AnyUser: true, Classes: []string{"WaitDevice"}}}},
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
	var oe *userclient.OpError
	if errors.As(err, &oe) {
		fmt.Println("application:", oe.Op, oe.Method+":", oe.Err)
	}
	fmt.Println("driver:", <-d.gaveUp)
	// Output:
	// application: call wait: context deadline exceeded
	// driver: context canceled
}

// A program that runs the registry itself — a test, a tool, an appliance
// with no separate daemon — gets an in-process client with the socket
// client's exact semantics: policy (as this process's credentials),
// bounded notifications, cleanup of everything it opened when its context
// ends, as when an application crashes.
func ExampleServer_Embed() {
	ctx := context.Background()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	_ = r.RegisterPersonality(driver.Personality{Name: "EchoDriver", Class: "EchoDevice", ProviderClass: "EchoNub",
		New: func() driver.Driver { return echoDriver{} }})
	_ = r.Publish(nil, r.NewNub("EchoNub", "echo0", driver.Properties{}))
	dir, _ := os.MkdirTemp("", "uc")
	defer os.RemoveAll(dir)
	srv, err := server.Listen(server.NewRegistryBackend(r), server.Config{Path: filepath.Join(dir, "drvkit.sock"), GID: -1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	cctx, die := context.WithCancel(ctx)
	defer die()
	c, err := srv.Embed(cctx)
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
	out, err := h.Call(ctx, "echo", []byte("in process"))
	fmt.Printf("%s %v\n", out, err)
	fmt.Println("sessions:", srv.Stats().Sessions)

	die() // the embedded client "crashes": the server closes what it opened
	<-c.Done()
	for srv.Stats().Sessions != 0 {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("sessions:", srv.Stats().Sessions, errors.Is(c.Err(), userclient.ErrClosed))
	// Output:
	// in process <nil>
	// sessions: 1
	// sessions: 0 true
}
