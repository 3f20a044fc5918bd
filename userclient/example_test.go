package userclient_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/drvkit/drvkit/userclient"
)

// An application dials the daemon, opens a device by what it is, calls
// its driver and closes it. Errors match the package's sentinels and say
// what was asked once.
func Example() {
	d, err := startDaemon() // drvctl serve, in a real deployment
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.stop()
	if _, err := d.plug(); err != nil {
		fmt.Println(err)
		return
	}

	ctx := context.Background()
	c, err := userclient.Dial(ctx, d.sock, userclient.WithClientName("example"))
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
	fmt.Println(h.Close())

	_, err = c.Open(ctx, userclient.Match{Personality: "nosuch"})
	fmt.Println(err)
	fmt.Println(errors.Is(err, userclient.ErrNoService))
	// Output:
	// hello, device <nil>
	// <nil>
	// open personality=nosuch: no such service
	// true
}

// An application started before its device waits for it: OpenWait returns
// once the device is plugged and its driver has started — no polling.
func ExampleClient_OpenWait() {
	d, err := startDaemon()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.stop()
	ctx := context.Background()
	c, err := userclient.Dial(ctx, d.sock)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	go func() {
		time.Sleep(10 * time.Millisecond) // the device arrives later
		_, _ = d.plug()
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

// Notifications tell the application what happens to its device; when it
// is unplugged, ServiceIsTerminated arrives and calls fail with
// ErrTerminated.
func ExampleHandle_Notifications() {
	d, err := startDaemon()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.stop()
	nub, err := d.plug()
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	c, err := userclient.Dial(ctx, d.sock)
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
	defer h.Close()

	nub.Terminate() // what an unplug does
	for n := range h.Notifications() {
		fmt.Println(n.Type)
		if n.Type == userclient.ServiceIsTerminated {
			break
		}
	}
	_, err = h.Call(ctx, "echo", nil)
	fmt.Println(errors.Is(err, userclient.ErrTerminated))
	// Output:
	// ServiceIsTerminated
	// true
}

// A handler gets the notifications on the goroutine that reads the
// connection, without a hand-off to one of the application's: the
// cheapest way to follow many devices. It must not wait for the client's
// answers: the close the daemon asks for goes to a goroutine of its own.
func ExampleWithNotificationHandler() {
	d, err := startDaemon()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.stop()
	nub, err := d.plug()
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	closed := make(chan error, 1)
	c, err := userclient.Dial(ctx, d.sock, userclient.WithNotificationHandler(func(h *userclient.Handle, n userclient.Notification) {
		fmt.Println(n.Type)
		if n.Type == userclient.ServiceIsRequestingClose {
			go func() { closed <- h.Close() }()
		}
	}))
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

	nub.Terminate() // what an unplug does
	fmt.Println(<-closed)
	_, err = h.Call(ctx, "echo", nil)
	fmt.Println(errors.Is(err, userclient.ErrClosed))
	// Output:
	// ServiceIsTerminated
	// ServiceIsRequestingClose
	// <nil>
	// true
}
