package drivertable_test

import (
	"context"
	"fmt"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
)

// A serial driver's entry: it needs a port opener that the daemon wires,
// and its custom personalities match USB vendor and product.
func Example() {
	type portOpener func(path string) error
	portKey := drivertable.NewKey[portOpener]("serial-port")

	serial := drivertable.Entry{
		Name:  "serial",
		Needs: []string{portKey.Name()},
		MatchKeys: []drivertable.MatchKey{
			drivertable.HexKey("vid", "idVendor", 16, "vendor id"),
			drivertable.HexKey("pid", "idProduct", 16, "product id"),
		},
		Personalities: func(r *drivertable.Resources) ([]driver.Personality, error) {
			open, err := portKey.From(r)
			if err != nil {
				return nil, err
			}
			return []driver.Personality{{
				Name: "serial", Class: "SerialPort", ProviderClass: "USBInterface",
				Match: []driver.Match{driver.MatchValue("bInterfaceClass", 0xff)},
				New:   func() driver.Driver { return &serialDriver{open: open} },
			}}, nil
		},
	}
	tbl, err := drivertable.New(serial)
	if err != nil {
		panic(err)
	}

	// The daemon: what it can wire, then the drivers asked for.
	res := drivertable.NewResources()
	if _, err := tbl.Lookup("modem"); err != nil {
		fmt.Println(err)
	}
	e, _ := tbl.Lookup("serial")
	if _, err := e.Defaults(res); err != nil {
		fmt.Println(err)
	}
	drivertable.Provide(res, portKey, func() (portOpener, error) { return func(string) error { return nil }, nil })
	ps, _ := e.Defaults(res)
	fmt.Println(ps[0].Name, ps[0].Class)

	// An operator's personality for one product (--personality).
	vid, _ := e.ParseMatch("vid", "0403")
	pid, _ := e.ParseMatch("pid", "6001")
	p, _ := e.Custom(res, "ftdi", 100, []driver.Match{vid, pid})
	fmt.Println(p.Name, p.Class, p.Score)
	// Output:
	// unknown driver "modem" (have serial)
	// wire serial: needs serial-port: not provided by this daemon
	// serial SerialPort
	// ftdi SerialPort 100
}

type serialDriver struct{ open func(string) error }

func (d *serialDriver) Start(context.Context, *driver.Service) error { return d.open("/dev/ttyUSB0") }
func (d *serialDriver) Stop(*driver.Service)                         {}
