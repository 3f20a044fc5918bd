package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/userclient"
)

// Separate-process clients: the test binary re-executed with
// DRVKIT_EXPLORE_CHILD set to the socket dials the daemon side of the run
// (a userclient/server.Server on the run's registry), opens a driver instance and
// calls it in a loop. Killing it is a real SIGKILL; the server's pidfd and
// EOF handling must clean up after it.
const (
	envChild = "DRVKIT_EXPLORE_CHILD"
	envClass = "DRVKIT_EXPLORE_CLASS"
)

// childMain is the application process.
func childMain(sock, class string) int {
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
	fmt.Println("opened")
	go func() {
		for n := range h.Notifications() {
			if n.Type == userclient.ServiceIsRequestingClose {
				_ = h.Close()
			}
		}
	}()
	quit := make(chan struct{})
	go func() { // stdin closed: the parent asks for an orderly exit
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(quit)
	}()
	method, in := "work", []byte("x")
	if class == usbstorage.Class {
		method, in = blockdev.MethodRead, blockdev.EncodeRead(1, 1)
	}
	for {
		select {
		case <-quit:
			_ = h.Close()
			return 0
		case <-c.Done():
			return 0
		default:
		}
		if _, err := h.Call(ctx, method, in); errors.Is(err, userclient.ErrTerminated) {
			<-quit // stay connected until told (or killed)
			return 0
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// procClient is the parent's view of an application process.
type procClient struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	done   chan struct{}
	killed atomic.Bool
}

func (w *world) startProc(class string) (*procClient, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+w.sock, envClass+"="+class)
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
	p := &procClient{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		line := ""
		if sc.Scan() {
			line = sc.Text()
		}
		first <- line
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(p.done)
	}()
	select {
	case line := <-first:
		if line != "opened" {
			<-p.done
			return nil, nil // the service is gone, or a fault refused it
		}
	case <-time.After(30 * time.Second):
		p.kill()
		<-p.done
		return nil, fmt.Errorf("child for %s did not open in 30s", class)
	}
	return p, nil
}

func (p *procClient) kill() {
	if p.killed.Swap(true) {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
}

func (p *procClient) quit() {
	if p.killed.Swap(true) {
		return
	}
	_ = p.stdin.Close()
	<-p.done
}

func (p *procClient) stop() {
	p.kill()
	<-p.done
	_ = p.stdin.Close()
}

func (p *procClient) alive() bool { return !p.killed.Load() }
