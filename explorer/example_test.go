package explorer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/explorer"
)

type stickDriver struct{}

func (stickDriver) Start(context.Context, *driver.Service) error { return nil }
func (stickDriver) Stop(*driver.Service)                         {}

// The explorer is an http.Handler over a registry (drvctl serve --http
// mounts it): the page at /, the tree and the rest of the API under /api/.
// Nothing in it changes the registry.
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	defer r.Close(ctx)
	_ = r.RegisterPersonality(driver.Personality{Name: "stick", Class: "ExampleStick", ProviderClass: "USBInterface",
		New: func() driver.Driver { return stickDriver{} }})
	_ = r.Publish(nil, r.NewNub("USBInterface", "2-1:1.0", driver.Properties{}))

	e := explorer.New(explorer.Config{Registry: r})
	defer e.Close()
	srv := httptest.NewServer(e)
	defer srv.Close()

	client := srv.Client()
	resp, err := client.Get(srv.URL + "/api/tree")
	if err != nil {
		fmt.Println(err)
		return
	}
	var tree struct{ Services []explorer.Node }
	err = json.NewDecoder(resp.Body).Decode(&tree)
	resp.Body.Close()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, n := range tree.Services {
		fmt.Printf("%s %q driver %q: %s, %d provider(s), %d client(s)\n", n.Class, n.Name, n.Driver, n.State, len(n.Providers), len(n.Clients))
	}

	// Read-only: anything but GET and HEAD is refused.
	resp, err = client.Post(srv.URL+"/api/tree", "application/json", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println("POST:", resp.Status)
	// Output:
	// Root "root" driver "": active, 0 provider(s), 1 client(s)
	// USBInterface "2-1:1.0" driver "": active, 1 provider(s), 1 client(s)
	// ExampleStick "stick" driver "stick": active, 1 provider(s), 0 client(s)
	// POST: 405 Method Not Allowed
}
