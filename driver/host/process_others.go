//go:build !linux

package host

import (
	"errors"
	"log/slog"
	"os"

	"github.com/drvkit/drvkit/driver/bundle"
)

// process is a driver's process; off Linux there is none.
type process struct {
	pid    int
	exited chan struct{}
}

var errNotLinux = errors.New("out-of-process drivers need Linux (setuid, no_new_privs, parent-death signal, SCM_RIGHTS)")

func spawn(*bundle.Manifest, *os.File, *slog.Logger) (*process, error) { return nil, errNotLinux }

func (p *process) kill()                {}
func (p *process) sigkill() error       { return os.ErrProcessDone }
func (p *process) closeOutput()         {}
func (p *process) describeExit() string { return "" }
