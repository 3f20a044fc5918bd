package host_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/driverproc"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/host/wire"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/examples/bundles/gocounter/counter"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// driverArg, as the test binary's first argument, makes it a driver
// process (the mode follows) instead of running the tests: the bundles of
// these tests run this very binary, copied where their user may read it.
const driverArg = "-drvkit.test-driver"

// testExe is the copy of the test binary the tests' bundles run.
var testExe string

func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == driverArg {
		testDriver(os.Args[2])
		return
	}
	if len(os.Args) >= 3 && os.Args[1] == daemonArg {
		testDaemon(os.Args[2])
		return
	}
	var dir string
	leaktest.Main(m, leaktest.Setup(func() {
		var err error
		dir, err = os.MkdirTemp("", "drvkit-host-test-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err == nil {
			testExe = filepath.Join(dir, "driver")
			err = copyFile(testExe, mustExecutable())
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "setting up the test driver:", err)
			os.Exit(2)
		}
	}), leaktest.Teardown(func() { os.RemoveAll(dir) }))
}

func mustExecutable() string {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return exe
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// testDriver is the driver process of a test: the counter sample, or a
// driver that misbehaves in the way mode names.
func testDriver(mode string) {
	switch mode {
	case "counter":
		driverproc.Main(counter.Entry)
	case "usbstorage":
		driverproc.Main(usbstorage.Entry)
	case "hangstop":
		driverproc.Main(wrap(func(c *counter.Counter) driver.Driver { return &hangStop{c} }))
	case "panicgo":
		driverproc.Main(wrap(func(c *counter.Counter) driver.Driver { return &panicLater{c} }))
	case "killstart":
		driverproc.Main(wrap(func(c *counter.Counter) driver.Driver { return &killStart{c} }))
	case "leakprovider":
		driverproc.Main(wrap(func(c *counter.Counter) driver.Driver { return &leakProvider{c} }))
	case "failstart":
		driverproc.Main(wrap(func(c *counter.Counter) driver.Driver { return &failStart{c} }))
	case "exit":
		os.Exit(3)
	case "echo": // BenchmarkCall's floor: echoes every message, no SDK
		echoLoop()
	case "app": // BenchmarkCall's application in its own process
		benchApp(os.Args[3])
	case "directapp": // TestDirectChannelsAppKilled's application
		directApp(os.Args[3])
	case "directthief": // TestDirectChannelHostile's other process
		directThief(os.Args[3], os.Args[4])
	case "badversion":
		rawDriver(func(c *wire.Conn, _ int) {
			_ = c.Send(&wire.Message{Type: wire.TypeHello, Version: "2.0"})
		})
	case "deaf": // answers start, then never reads again
		rawDriver(func(c *wire.Conn, _ int) {
			_ = c.Send(&wire.Message{Type: wire.TypeHello, Version: wire.Version})
			m, files, err := c.Receive()
			for _, f := range files {
				f.Close()
			}
			if err != nil || m.Type != wire.TypeStart {
				os.Exit(4)
			}
			_ = c.Send(&wire.Message{Type: wire.TypeResult, ID: m.ID})
			time.Sleep(time.Hour)
		})
	case "flood": // after its first call, floods notifications and log lines
		rawDriver(func(c *wire.Conn, _ int) {
			_ = c.Send(&wire.Message{Type: wire.TypeHello, Version: wire.Version})
			for {
				m, files, err := c.Receive()
				for _, f := range files {
					f.Close()
				}
				if err != nil {
					os.Exit(4)
				}
				_ = c.Send(&wire.Message{Type: wire.TypeResult, ID: m.ID})
				if m.Type == wire.TypeCall {
					break
				}
			}
			for i := range floodNotes {
				_ = c.Send(&wire.Message{Type: wire.TypeNotify, To: wire.ToInterest, Msg: floodMsg, Data: []byte(strconv.Itoa(i))})
				if i%2 == 0 {
					_ = c.Send(&wire.Message{Type: wire.TypeLog, Text: "flood line " + strconv.Itoa(i)})
				}
			}
		})
	case "oversize", "garbage":
		rawDriver(func(c *wire.Conn, fd int) {
			_ = c.Send(&wire.Message{Type: wire.TypeHello, Version: wire.Version})
			m, files, err := c.Receive()
			for _, f := range files {
				f.Close()
			}
			if err != nil || m.Type != wire.TypeStart {
				os.Exit(4)
			}
			_ = c.Send(&wire.Message{Type: wire.TypeResult, ID: m.ID})
			time.Sleep(50 * time.Millisecond)
			msg := []byte("this is not JSON")
			if mode == "oversize" {
				msg = make([]byte, wire.MaxMessage+100)
			}
			if err := syscall.Sendmsg(fd, msg, nil, nil, 0); err != nil {
				fmt.Fprintln(os.Stderr, "sendmsg:", err)
			}
		})
	default:
		fmt.Fprintln(os.Stderr, "unknown test driver", mode)
		os.Exit(2)
	}
}

// rawDriver speaks the protocol by hand after reading the daemon's hello,
// then waits for the daemon to close the socket.
func rawDriver(after func(c *wire.Conn, fd int)) {
	fd, err := syscall.Dup(3) // for writing bytes that are not a message
	if err != nil {
		os.Exit(5)
	}
	c, err := wire.NewConn(os.NewFile(3, "socket"))
	if err != nil {
		os.Exit(5)
	}
	if _, _, err := c.Receive(); err != nil {
		os.Exit(6)
	}
	after(c, fd)
	for {
		if _, _, err := c.Receive(); err != nil {
			os.Exit(0)
		}
	}
}

// wrap is the counter's entry with its driver wrapped.
func wrap(f func(*counter.Counter) driver.Driver) drivertable.Entry {
	e := counter.Entry
	e.Personalities = func(r *drivertable.Resources) ([]driver.Personality, error) {
		ps, err := counter.Entry.Personalities(r)
		if err != nil {
			return nil, err
		}
		for i := range ps {
			ps[i].New = func() driver.Driver { return f(&counter.Counter{}) }
		}
		return ps, nil
	}
	return e
}

type hangStop struct{ *counter.Counter }

func (h *hangStop) Stop(*driver.Service) { select {} }

type panicLater struct{ *counter.Counter }

func (p *panicLater) Start(ctx context.Context, s *driver.Service) error {
	go func() {
		time.Sleep(100 * time.Millisecond)
		panic("the driver's own goroutine panics")
	}()
	return p.Counter.Start(ctx, s)
}

// leakProvider keeps its provider with its instance as tag, never
// released: only its own process can see it.
type leakProvider struct{ *counter.Counter }

func (l *leakProvider) Start(ctx context.Context, s *driver.Service) error {
	s.Providers()[0].TaggedRetain(s) // the leak TestLeakReport looks for
	return l.Counter.Start(ctx, s)
}

type killStart struct{ *counter.Counter }

func (k *killStart) Start(context.Context, *driver.Service) error {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

type failStart struct{ *counter.Counter }

func (failStart) Start(context.Context, *driver.Service) error {
	return fmt.Errorf("the device says no")
}

// echoLoop echoes every message read on descriptor 3 until it ends.
func echoLoop() {
	nc, err := net.FileConn(os.NewFile(3, "floor"))
	if err != nil {
		os.Exit(5)
	}
	c := nc.(*net.UnixConn)
	buf := make([]byte, wire.MaxMessage)
	for {
		n, err := c.Read(buf)
		if err != nil || n == 0 {
			os.Exit(0)
		}
		if _, err := c.Write(buf[:n]); err != nil {
			os.Exit(0)
		}
	}
}
