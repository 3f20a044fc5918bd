// Command demo is what `make demo` runs: the drvkit daemon on a simulated
// bus, driven the way a person would drive it, with real processes:
//
//  1. drvctl serve --sim testdata/scenarios/demo.scn (a SCSI disk at boot);
//  2. drvctl monitor, whose lines are shown as each step happens;
//  3. an application (examples/scsiapp -wait) starts before its device and
//     waits for it (OpenWait);
//  4. a USB stick is plugged (drvctl sim) and matched by usbstorage; the
//     application gets it, reads a block and holds it;
//  5. the application is killed with SIGKILL: its user client is cleaned up;
//  6. the stick is unplugged; the drivers are unloaded;
//  7. the leak report, and the daemon's shutdown, which fails on any leak.
//
// It exits non-zero if any step does not do what it should.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", ".cache/bin", "`dir` holding the drvctl and scsiapp binaries")
	scenarios := flag.String("scenarios", "testdata/scenarios", "`dir` holding demo.scn and demo-plug.scn")
	flag.Parse()
	start := time.Now()
	if err := run(*bin, *scenarios); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("\ndemo finished in %.1fs: every object freed, nothing leaked.\n", time.Since(start).Seconds())
}

type demo struct {
	drvctl, scsiapp, socket string
	monitor                 *lineBuffer
}

func run(bin, scenarios string) error {
	dir, err := os.MkdirTemp("", "drvkit-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d := &demo{drvctl: filepath.Join(bin, "drvctl"), scsiapp: filepath.Join(bin, "scsiapp"),
		socket: filepath.Join(dir, "drvkit.sock"), monitor: &lineBuffer{}}

	step("Start the daemon on a simulated bus: a SCSI disk is there at boot")
	show("drvctl serve --sim %s --socket %s", filepath.Join(scenarios, "demo.scn"), d.socket)
	var serveLog bytes.Buffer
	serve := exec.Command(d.drvctl, "serve", "--sim", filepath.Join(scenarios, "demo.scn"), "--socket", d.socket)
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	if err := serve.Start(); err != nil {
		return err
	}
	served := false
	defer func() {
		if !served {
			_ = serve.Process.Kill()
			_ = serve.Wait()
			fmt.Fprintf(os.Stderr, "daemon log:\n%s", serveLog.String())
		}
	}()
	if err := waitSocket(d.socket, 10*time.Second); err != nil {
		return err
	}

	mon := exec.Command(d.drvctl, "monitor", "--socket", d.socket)
	mon.Stdout = d.monitor
	mon.Stderr = d.monitor
	if err := mon.Start(); err != nil {
		return err
	}
	defer func() { _ = mon.Process.Kill(); _ = mon.Wait() }()
	time.Sleep(200 * time.Millisecond) // let the monitor open its stream
	d.monitor.take()                   // its banner
	if err := d.inspect(); err != nil {
		return err
	}

	step("Start an application before its device exists: it waits for usbstorage\n    (OpenWait: the daemon opens the device for it once its driver has started — no polling)")
	show("scsiapp -driver usbstorage -wait 10s -hold")
	app := exec.Command(d.scsiapp, "-socket", d.socket, "-driver", "usbstorage", "-wait", "10s", "-hold")
	appOut := &lineBuffer{}
	app.Stdout, app.Stderr = appOut, appOut
	if err := app.Start(); err != nil {
		return err
	}
	appFailed := func(err error) error {
		_ = app.Process.Kill()
		_ = app.Wait()
		return fmt.Errorf("application: %w; it printed:\n%s", err, appOut.String())
	}
	if err := appOut.waitFor("waiting up to", 10*time.Second); err != nil {
		return appFailed(err)
	}
	fmt.Print(indent(appOut.take()))

	step("Plug a USB mass-storage stick: usbstorage matches its interface and claims it\n    (the kernel's usb-storage lets go, so the stick's SCSI disk goes away, as on a real machine);\n    the waiting application gets it, reads block 0 and holds it open")
	if err := d.cmd("sim", "-f", filepath.Join(scenarios, "demo-plug.scn")); err != nil {
		return appFailed(err)
	}
	if err := appOut.waitFor("holding the device open", 10*time.Second); err != nil {
		return appFailed(err)
	}
	fmt.Print(indent(appOut.take()))
	d.showMonitor()
	if err := d.inspect(); err != nil {
		return appFailed(err)
	}
	if _, ok, err := d.find("USBMassStorage"); err != nil || !ok {
		return appFailed(fmt.Errorf("usbstorage did not match the stick (err %v)", err))
	}

	step(fmt.Sprintf("Kill the application (pid %d) with SIGKILL: nothing depends on it behaving", app.Process.Pid))
	killed := time.Now()
	_ = app.Process.Signal(syscall.SIGKILL)
	_ = app.Wait()
	if err := d.waitGone("UserClient", 5*time.Second); err != nil {
		return err
	}
	fmt.Printf("  user client freed %.1f ms after SIGKILL\n", float64(time.Since(killed).Microseconds())/1000)
	d.showMonitor()
	if err := d.inspect(); err != nil {
		return err
	}

	step("Unplug the stick: surprise removal, leaves first")
	if err := d.cmd("sim", "unplug 2-1"); err != nil {
		return err
	}
	d.showMonitor()

	step("Unload the drivers")
	for _, drv := range []string{"usbstorage", "sg"} {
		if err := d.cmd("unload", drv); err != nil {
			return err
		}
	}
	d.showMonitor()
	if err := d.inspect(); err != nil {
		return err
	}

	step("Leak report: objects that should be gone")
	out, err := d.output("leaks")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	if !strings.HasPrefix(out, "no leaks: ") {
		return errors.New("the leak report is not empty")
	}

	step("Stop the daemon (SIGTERM): it terminates everything in order and fails on any leak")
	_ = serve.Process.Signal(syscall.SIGTERM)
	err = serve.Wait()
	served = true
	fmt.Print(indent(lastLines(serveLog.String(), 2)))
	if err != nil {
		return fmt.Errorf("daemon exited with %v; its log:\n%s", err, serveLog.String())
	}
	return nil
}

func step(title string) { fmt.Printf("\n=== %s\n", title) }

func show(format string, args ...any) { fmt.Printf("$ "+format+"\n", args...) }

func (d *demo) cmd(args ...string) error {
	_, err := d.output(args...)
	return err
}

func (d *demo) output(args ...string) (string, error) {
	show("drvctl %s", strings.Join(args, " "))
	args = append(args, "--socket", d.socket)
	out, err := exec.Command(d.drvctl, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("drvctl %s: %v\n%s", args[0], err, out)
	}
	return string(out), nil
}

func (d *demo) inspect() error {
	out, err := d.output("inspect")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	return nil
}

// find reports whether a service of class is in the registry.
func (d *demo) find(class string) (uint64, bool, error) {
	out, err := exec.Command(d.drvctl, "inspect", "-o", "json", "--socket", d.socket).Output()
	if err != nil {
		return 0, false, err
	}
	var doc struct {
		Services []struct {
			ID    uint64 `json:"id"`
			Class string `json:"class"`
		} `json:"services"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return 0, false, err
	}
	for _, s := range doc.Services {
		if s.Class == class {
			return s.ID, true, nil
		}
	}
	return 0, false, nil
}

func (d *demo) waitGone(class string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_, ok, err := d.find(class)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("%s still in the registry after %v", class, timeout)
}

// showMonitor prints what the monitor printed since last time, once it has
// been quiet for a moment.
func (d *demo) showMonitor() {
	d.monitor.settle(150*time.Millisecond, 2*time.Second)
	if out := d.monitor.take(); out != "" {
		fmt.Println("  monitor:")
		fmt.Print(indent(out))
	}
}

func waitSocket(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("the daemon did not open %s within %v", path, timeout)
}

func indent(s string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		b.WriteString("    " + sc.Text() + "\n")
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// lineBuffer collects a process's output for the demo to show piecewise.
type lineBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	shown   int
	changed time.Time
}

var _ io.Writer = (*lineBuffer)(nil)

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changed = time.Now()
	return l.buf.Write(p)
}

func (l *lineBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// take returns what was written since the last take.
func (l *lineBuffer) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.buf.String()[l.shown:]
	l.shown = l.buf.Len()
	return s
}

func (l *lineBuffer) waitFor(text string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !strings.Contains(l.String(), text) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("no %q within %v", text, timeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// settle waits until nothing was written for quiet, at most max.
func (l *lineBuffer) settle(quiet, max time.Duration) {
	end := time.Now().Add(max)
	for time.Now().Before(end) {
		l.mu.Lock()
		idle := time.Since(l.changed)
		l.mu.Unlock()
		if idle >= quiet {
			return
		}
		time.Sleep(quiet / 5)
	}
}
