// Command leakdemo leaks reference-counted objects on purpose, with tracing
// on, and prints the refcount report: what `make demo` shows until drvctl
// exists. It models the two leaks drvkit exists to find: a user client
// whose application crashed without its reference being dropped, and a
// provider and driver that keep each other alive after a termination that
// forgot to detach.
//
//	leakdemo [-o text|json] [-profile FILE]
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/drvkit/drvkit/refcount"
)

type service struct {
	refcount.Object
	name string
}

func newService(class, name string) *service {
	s := &service{name: name}
	s.Init(class, nil)
	return s
}

// attach makes client a client of provider: each holds the other, the way
// an IOKit provider and its driver do until detach.
func attach(provider, client *service) {
	provider.TaggedRetain(client)
	client.TaggedRetain(provider)
}

// openUserClient is an application opening the driver.
func openUserClient(driver *service, pid int) {
	driver.TaggedRetain(fmt.Sprintf("userclient pid %d", pid))
}

// runJob takes and drops a job reference properly.
func runJob(driver *service) {
	driver.TaggedRetain("job:read-capacity")
	defer driver.TaggedRelease("job:read-capacity")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// leak builds the leaking scenario.
func leak() {

	// A USB device and its mass-storage driver, both registered.
	dev := newService("USBDevice", "usb 1-1")
	drv := newService("MassStorage", "msd0")
	dev.TaggedRetain("registry")
	drv.TaggedRetain("registry")
	attach(dev, drv)
	runJob(drv)

	// An application opens the driver, then crashes: nobody runs its
	// close path (the bug drvkit's ClientDied prevents).
	openUserClient(drv, 4242)

	// A second device is unplugged; termination drops the registry's
	// references but forgets to detach: provider and driver hold each other.
	dev2 := newService("USBDevice", "usb 1-2")
	drv2 := newService("MassStorage", "msd1")
	attach(dev2, drv2)
	for _, s := range []*service{dev, drv, dev2, drv2} {
		s.Release() // creators' references
	}
	dev.TaggedRelease("registry")
	drv.TaggedRelease("registry")

}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("leakdemo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("o", "text", "report format: text or json")
	profile := fs.String("profile", "", "also write a pprof profile of outstanding references to `file`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintf(stderr, "leakdemo: unknown format %q (text or json)\n", *format)
		return 2
	}
	if os.Getenv(refcount.EnvVar) == "" {
		refcount.TraceAll()
	}
	leak()
	fmt.Fprintln(stderr, "leakdemo: leaked on purpose; the refcount report follows")
	r := refcount.CurrentReport()
	var err error
	if *format == "json" {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteText(stdout)
	}
	if err == nil && *profile != "" {
		var f *os.File
		if f, err = os.Create(*profile); err == nil {
			err = r.WriteProfile(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				fmt.Fprintf(stderr, "leakdemo: profile written; see it with: go tool pprof -top %s\n", *profile)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "leakdemo:", err)
		return 1
	}
	return 0
}
