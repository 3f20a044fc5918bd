package userclient_test

import (
	"context"
	"os"
	"path/filepath"

	"github.com/drvkit/drvkit/driver"
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

// daemon stands in for `drvctl serve` in the examples: a registry with the
// EchoDriver personality, served on a socket that anyone may open
// EchoDevices through.
type daemon struct {
	reg  *driver.Registry
	srv  *server.Server
	dir  string
	sock string
}

func startDaemon() (*daemon, error) {
	d := &daemon{reg: driver.NewRegistry()}
	if err := d.reg.RegisterPersonality(driver.Personality{Name: "EchoDriver", Class: "EchoDevice", ProviderClass: "EchoNub",
		New: func() driver.Driver { return echoDriver{} }}); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "uc")
	if err != nil {
		return nil, err
	}
	d.dir, d.sock = dir, filepath.Join(dir, "drvkit.sock")
	d.srv, err = server.Listen(server.NewRegistryBackend(d.reg), server.Config{Path: d.sock, GID: -1,
		Policy: server.Policy{Rules: []server.Rule{{AnyUser: true, Classes: []string{"EchoDevice"}}}}})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return d, nil
}

// plug publishes an echo device; its EchoDriver instance is the service
// applications open.
func (d *daemon) plug() (*driver.Service, error) {
	nub := d.reg.NewNub("EchoNub", "echo0", driver.Properties{})
	return nub, d.reg.Publish(nil, nub)
}

func (d *daemon) stop() {
	d.srv.Close()
	d.reg.Close(context.Background())
	os.RemoveAll(d.dir)
}
