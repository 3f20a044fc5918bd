//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drvkit/drvkit/e2e/agentproto"
)

const defaultTimeout = 30 * time.Second

func timeout(ms int) time.Duration {
	if ms <= 0 {
		return defaultTimeout
	}
	return time.Duration(ms) * time.Millisecond
}

func execute(x agentproto.ExecArgs) (*agentproto.ExecResult, error) {
	if len(x.Argv) == 0 {
		return nil, errors.New("exec: empty argv")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout(x.TimeoutMs))
	defer cancel()
	cmd := exec.CommandContext(ctx, x.Argv[0], x.Argv[1:]...)
	cmd.Env = append(os.Environ(), x.Env...)
	cmd.Stdin = strings.NewReader(x.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	t0 := time.Now()
	err := cmd.Run()
	r := &agentproto.ExecResult{Ms: float64(time.Since(t0).Microseconds()) / 1000}
	r.Stdout, r.Stderr = stdout.String(), stderr.String()
	r.TimedOut = ctx.Err() != nil
	return r, exitStatus(r, cmd, err)
}

// exitStatus fills Exit/Signal; only a program that could not run at all is
// an error (a non-zero exit is a result the host asserts on).
func exitStatus(r *agentproto.ExecResult, cmd *exec.Cmd, err error) error {
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		if cmd.ProcessState == nil {
			return fmt.Errorf("exec %s: %w", cmd.Path, err)
		}
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		r.Exit, r.Signal = -1, ws.Signal().String()
	default:
		r.Exit = cmd.ProcessState.ExitCode()
	}
	return nil
}

type proc struct {
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	done           chan struct{}
	err            error
	t0             time.Time
	ms             float64
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// procTable holds the named background processes.
type procTable struct {
	mu    sync.Mutex
	procs map[string]*proc
}

func newProcTable() *procTable { return &procTable{procs: make(map[string]*proc)} }

func (t *procTable) start(x agentproto.StartArgs) (*agentproto.StartResult, error) {
	if x.Name == "" || len(x.Argv) == 0 {
		return nil, errors.New("start: name and argv are required")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.procs[x.Name]; ok {
		select {
		case <-p.done:
		default:
			return nil, fmt.Errorf("start: %q is still running (pid %d)", x.Name, p.cmd.Process.Pid)
		}
	}
	p := &proc{cmd: exec.Command(x.Argv[0], x.Argv[1:]...), done: make(chan struct{}), t0: time.Now()}
	p.cmd.Env = append(os.Environ(), x.Env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", x.Name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.ms = float64(time.Since(p.t0).Microseconds()) / 1000
		close(p.done)
	}()
	t.procs[x.Name] = p
	return &agentproto.StartResult{Pid: p.cmd.Process.Pid}, nil
}

func (t *procTable) get(name string) (*proc, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.procs[name]
	if !ok {
		return nil, fmt.Errorf("no process named %q", name)
	}
	return p, nil
}

func (t *procTable) signal(x agentproto.SignalArgs) error {
	p, err := t.get(x.Name)
	if err != nil {
		return err
	}
	select {
	case <-p.done:
		return fmt.Errorf("signal %s: already exited", x.Name)
	default:
	}
	return p.cmd.Process.Signal(syscall.Signal(x.Signal))
}

func (t *procTable) wait(x agentproto.WaitArgs) (*agentproto.ExecResult, error) {
	p, err := t.get(x.Name)
	if err != nil {
		return nil, err
	}
	tm := time.NewTimer(timeout(x.TimeoutMs))
	defer tm.Stop()
	select {
	case <-p.done:
	case <-tm.C:
		return nil, fmt.Errorf("wait %s: still running after %v", x.Name, timeout(x.TimeoutMs))
	}
	r := &agentproto.ExecResult{Stdout: p.stdout.String(), Stderr: p.stderr.String(), Ms: p.ms}
	return r, exitStatus(r, p.cmd, p.err)
}
