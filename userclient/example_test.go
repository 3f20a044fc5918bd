package userclient_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
