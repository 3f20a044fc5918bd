package host

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/host/wire"
)

// process is a driver's process.
type process struct {
	cmd     *exec.Cmd
	pid     int
	exited  chan struct{} // closed once reaped
	drained chan struct{} // its output was read to the end
	out     *os.File      // the read end of its stdout and stderr
	state   *os.ProcessState
	waitErr error
}

// cleanPath is the only environment a driver inherits besides the socket's
// number: nothing of the daemon's environment leaks into it.
const cleanPath = "PATH=/usr/local/bin:/usr/bin:/bin"

// spawn starts m's executable with sock as descriptor 3, as m's user
// (when the daemon is root), with no_new_privs and SIGKILL as its
// parent-death signal, in a process group of its own.
func spawn(m *bundle.Manifest, sock *os.File, log *slog.Logger) (*process, error) {
	out, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       m.Executable,
		Args:       append([]string{m.Executable}, m.Args...),
		Env:        []string{cleanPath, wire.FDEnv + "=3", "DRVKIT_DRIVER=" + m.Name},
		Dir:        "/",
		Stdout:     outW,
		Stderr:     outW,
		ExtraFiles: []*os.File{sock},
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
		},
	}
	if os.Geteuid() == 0 {
		// Supplementary groups dropped: the driver is its user and group.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: m.UID, Gid: m.GID, Groups: []uint32{}}
	}
	err = spawner.start(cmd)
	outW.Close()
	if err != nil {
		out.Close()
		return nil, err
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{}), drained: make(chan struct{}), out: out}
	go p.pump(out, log.With("driver", m.Name, "pid", p.pid))
	go func() {
		p.waitErr = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.exited)
		spawner.release()
	}()
	return p, nil
}

// pump logs the process's output, a line at a time.
func (p *process) pump(r *os.File, log *slog.Logger) {
	defer close(p.drained)
	br := bufio.NewReaderSize(r, 4096)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			log.Info("driver output", "line", string(line))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if !errors.Is(err, io.EOF) {
				log.Warn("reading the driver's output", "err", err)
			}
			return
		}
	}
}

// kill sends SIGKILL to the process group (the driver and anything it
// forked), unless the process was reaped already.
func (p *process) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	_ = p.cmd.Process.Kill()
}

// sigkill sends SIGKILL to the driver process alone, as a kill from
// outside would; os.ErrProcessDone once it was reaped (os.Process knows:
// never a reused pid).
func (p *process) sigkill() error { return p.cmd.Process.Signal(syscall.SIGKILL) }

// closeOutput waits a moment for the output to end (a child that outlived
// the driver in another process group may hold it) and closes it.
func (p *process) closeOutput() {
	t := time.NewTimer(time.Second)
	select {
	case <-p.drained:
	case <-t.C:
	}
	t.Stop()
	p.out.Close() // ends the pump's read if it still waits
	<-p.drained
}

func (p *process) describeExit() string {
	if p.state == nil {
		return fmt.Sprintf("ended: %v", p.waitErr)
	}
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by signal " + ws.Signal().String()
	}
	return "exited with status " + fmt.Sprint(p.state.ExitCode())
}

// spawner forks driver processes from one OS thread that has
// no_new_privs set (prctl(PR_SET_NO_NEW_PRIVS) applies to the calling
// thread and what it forks) and lives as long as one of its children: the
// kernel sends the parent-death signal when the thread that forked a
// child ends, not the process. The daemon's other threads keep their
// privileges. The thread ends once its last child has been reaped.
var spawner spawnThread

type spawnThread struct {
	mu   sync.Mutex
	n    int // children alive or being started
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func (t *spawnThread) start(cmd *exec.Cmd) error {
	t.mu.Lock()
	if t.n == 0 {
		t.reqs = make(chan spawnReq)
		go spawnLoop(t.reqs)
	}
	t.n++
	reqs := t.reqs
	t.mu.Unlock()
	done := make(chan error, 1)
	reqs <- spawnReq{cmd: cmd, done: done}
	err := <-done
	if err != nil {
		t.release()
	}
	return err
}

func (t *spawnThread) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		close(t.reqs)
		t.reqs = nil
	}
}

func spawnLoop(reqs <-chan spawnReq) {
	// Never unlocked: the thread exits with this goroutine, after its
	// last child.
	runtime.LockOSThread()
	err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	if err != nil {
		err = fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	for r := range reqs {
		if err != nil {
			r.done <- err
			continue
		}
		r.done <- r.cmd.Start()
	}
}
