package verify

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/userclient"
)

// Applications. An embedded application is an in-process user client
// attached to the driver instance, holding it open and calling it in a
// loop; its crash is a terminate without a close. An application process
// is the running binary (the test binary, or drvctl) re-executed with
// envApp set: it dials the run's userclient server, opens the driver,
// calls it in a loop and prints every notification it hears; its crash is
// a real SIGKILL, cleaned up by the server's EOF and pidfd handling.
const (
	envApp    = "DRVKIT_VERIFY_APP"    // socket path
	envClass  = "DRVKIT_VERIFY_CLASS"  // class to open
	envMethod = "DRVKIT_VERIFY_METHOD" // method to call
	envInput  = "DRVKIT_VERIFY_INPUT"  // its input, hex
)

// init runs the application process when the binary was re-executed as
// one: any program linking this package (a test binary, drvctl) can be
// the application of its own runs, with no TestMain to write.
func init() {
	if sock := os.Getenv(envApp); sock != "" {
		in, _ := hex.DecodeString(os.Getenv(envInput))
		os.Exit(appMain(sock, os.Getenv(envClass), Call{Method: os.Getenv(envMethod), Input: in}))
	}
}

func appMain(sock, class string, call Call) int {
	ctx := context.Background()
	c, err := userclient.Dial(ctx, sock)
	if err != nil {
		fmt.Println("dial-failed:", err)
		return 0
	}
	defer c.Close()
	h, err := c.Open(ctx, userclient.Match{Class: class})
	if err != nil {
		fmt.Println("open-failed:", err)
		return 0
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		fmt.Printf(format+"\n", args...)
		out.Unlock()
	}
	if h.Direct() {
		say("opened direct")
	} else {
		say("opened")
	}
	go func() {
		for n := range h.Notifications() {
			say("notify %s %s %s", n.Type, orDash(n.Cause), orDash(n.RootCause))
			if n.Type == userclient.ServiceIsRequestingClose {
				_ = h.Close()
			}
		}
	}()
	quit := make(chan struct{})
	go func() { // stdin closed: the parent asks for an orderly close
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(quit)
	}()
	for {
		select {
		case <-quit:
			_ = h.Close()
			return 0
		case <-c.Done():
			return 0
		default:
		}
		if call.Method != "" {
			if _, err := h.Call(ctx, call.Method, call.Input); errors.Is(err, userclient.ErrTerminated) {
				<-quit // stay connected until told (or killed)
				_ = h.Close()
				return 0
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// app is an application of a run.
type app interface {
	kill()       // crash
	quit()       // orderly close and exit
	stop()       // end it (a process is killed) and wait
	alive() bool // neither killed nor quit
	name() string
	// heard is the termination notices it received, "Type cause root".
	heard() []string
}

// embedded is an in-process user client.
type embedded struct {
	r      *Trial
	label  string
	svc    *driver.Service
	prov   *driver.Service
	call   Call
	cancel context.CancelFunc
	done   chan struct{}
	killed atomic.Bool
	ending atomic.Bool // quit: finish the call in flight, then stop
	mu     sync.Mutex
	notes  []string
}

var (
	_ driver.MessageHandler = (*embedded)(nil)
	_ app                   = (*embedded)(nil)
	_ app                   = (*process)(nil)
)

func (c *embedded) Message(s *driver.Service, m driver.Message) error {
	if m.From != c.prov.ID() {
		return nil
	}
	switch m.Type {
	case driver.ServiceIsTerminated, driver.ServiceIsRequestingClose:
		c.mu.Lock()
		c.notes = append(c.notes, fmt.Sprintf("%s %s %s", m.Type, m.Cause.Text(), m.RootCause.Text()))
		c.mu.Unlock()
	}
	if m.Type == driver.ServiceIsRequestingClose {
		_ = c.prov.Close(s)
	}
	return nil
}

func (c *embedded) io(ctx context.Context) {
	defer close(c.done)
	for ctx.Err() == nil && !c.ending.Load() {
		if c.call.Method != "" {
			_, err := c.prov.Call(ctx, c.call.Method, c.call.Input)
			c.r.calls.Add(1)
			if err != nil {
				c.r.callErrs.Add(1)
				if errors.Is(err, driver.ErrNotActive) {
					return
				}
			}
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (c *embedded) kill() {
	if c.killed.Swap(true) {
		return
	}
	c.cancel()
	c.svc.Terminate()
	c.svc.TaggedRelease(c)
}

func (c *embedded) quit() {
	if c.killed.Swap(true) {
		return
	}
	c.ending.Store(true) // an orderly exit: the call in flight completes
	<-c.done
	c.cancel()
	_ = c.prov.Close(c.svc)
	c.svc.Terminate()
	c.svc.TaggedRelease(c)
}

// stop ends the application at the end of a run; its client stays
// attached (the registry's teardown ends it) but the application's own
// reference goes, unless kill or quit already let it go.
func (c *embedded) stop() {
	c.cancel()
	<-c.done
	if !c.killed.Swap(true) {
		c.svc.TaggedRelease(c)
	}
}

func (c *embedded) alive() bool  { return !c.killed.Load() }
func (c *embedded) name() string { return c.label }
func (c *embedded) heard() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.notes...)
}

// process is an application process.
type process struct {
	label  string
	cmd    *exec.Cmd
	stdin  io.Closer
	done   chan struct{}
	killed atomic.Bool
	direct bool // it calls on a direct call channel
	mu     sync.Mutex
	notes  []string
}

// startProcess starts an application process that opens class; nil if it
// could not open it (the service is gone, or a fault refused it).
// added is told of the process as soon as it runs, before it can call the
// driver (a fault at its first call must find it).
func startProcess(sock, class string, call Call, label string, added func(*process)) (*process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envApp+"="+sock, envClass+"="+class, envMethod+"="+call.Method, envInput+"="+hex.EncodeToString(call.Input))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{label: label, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	added(p)
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		line := ""
		if sc.Scan() {
			line = sc.Text()
		}
		first <- line
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "notify "); ok {
				p.mu.Lock()
				p.notes = append(p.notes, n)
				p.mu.Unlock()
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(p.done)
	}()
	select {
	case line := <-first:
		p.direct = line == "opened direct"
		if line != "opened" && !p.direct {
			p.killed.Store(true)
			<-p.done
			_ = stdin.Close()
			return nil, nil
		}
	case <-time.After(30 * time.Second):
		p.kill()
		<-p.done
		p.killed.Store(true)
		_ = stdin.Close()
		return nil, fmt.Errorf("application process for %s did not open in 30s", class)
	}
	return p, nil
}

func (p *process) kill() {
	if p.killed.Swap(true) {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
}

func (p *process) quit() {
	if p.killed.Swap(true) {
		return
	}
	_ = p.stdin.Close()
	<-p.done
}

func (p *process) stop() {
	p.kill()
	<-p.done
	_ = p.stdin.Close()
}

func (p *process) alive() bool  { return !p.killed.Load() }
func (p *process) name() string { return p.label }
func (p *process) heard() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.notes...)
}
