package driver

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

var (
	// ErrNotActive: the service is terminated (or being terminated).
	ErrNotActive = errors.New("service is not active")
	// ErrHasInstances: Unload found instances of the driver still alive.
	ErrHasInstances = errors.New("classes have instances")
	// ErrNoDevice: the device behind a service vanished (surprise removal).
	ErrNoDevice = errors.New("no such device")
	// ErrExclusive: the service is open exclusively, or an exclusive open
	// was asked of a service that is already open.
	ErrExclusive = errors.New("exclusive access conflict")
	// ErrNotOpen: Close by a client that does not have the service open.
	ErrNotOpen = errors.New("service is not open by this client")
	// ErrNotAttached: the client is not attached to the provider.
	ErrNotAttached = errors.New("client is not attached to this provider")
	// ErrPublished: the nub is already published.
	ErrPublished = errors.New("service is already published")
	// ErrClosed: the registry is closed.
	ErrClosed = errors.New("registry is closed")
	// ErrNoMethod: the driver has no client method of that name.
	ErrNoMethod = errors.New("no such client method")
	// ErrBlocked: a synchronous terminate passed its deadline.
	ErrBlocked = errors.New("termination blocked")
)

// NoDevice marks err, a transport's own "device gone" error, as ErrNoDevice
// for the registry and applications (errors.Is(err, ErrNoDevice) is true,
// errors.Is/As still see err) without repeating what err already says.
func NoDevice(err error) error {
	if err == nil || errors.Is(err, ErrNoDevice) {
		return err
	}
	return &noDeviceError{err: err}
}

type noDeviceError struct{ err error }

func (e *noDeviceError) Error() string   { return e.err.Error() }
func (e *noDeviceError) Unwrap() []error { return []error{ErrNoDevice, e.err} }

// OpError is the error of a registry operation: Op ("open", "publish", …),
// the service it applied to (may be empty) and the cause. Its message is
// "op service: cause", without the package name: the caller adds its own
// context, once.
type OpError struct {
	Op      string
	Service string
	Err     error
}

func (e *OpError) Error() string {
	if e.Service == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Op + " " + e.Service + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

func opErr(op string, s *Service, err error) error {
	name := ""
	if s != nil {
		name = s.describe()
	}
	return &OpError{Op: op, Service: name, Err: err}
}

// PanicError is a panic recovered from a driver callback.
type PanicError struct {
	Callback string // "Start", "Stop", "Message", …
	Service  string
	Value    any
	Stack    string
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("%s of %s panicked: %v", e.Callback, e.Service, e.Value)
}

// Unwrap returns the panic value when it is an error (a driver that
// panics with io.ErrUnexpectedEOF, or re-panics with a recovered error),
// so errors.Is and errors.As see through the recovery; nil otherwise.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Blocker is one thing that keeps a terminated service from being freed.
type Blocker struct {
	Service string // "Class#ID \"name\""
	What    string // one line: "open by …", "job … running since …", "held by …"
	Stacks  []string
}

// BlockedError is returned by TerminateSync, Unload and Close when the
// deadline passes before every terminated service is freed. It wraps both
// ErrBlocked and the context's error.
type BlockedError struct {
	Op       string
	Service  string
	Blockers []Blocker
	Cause    error // the context error
}

func (e *BlockedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %v; blocked by:", e.Op, e.Service, e.Cause)
	writeBlockers(&b, e.Blockers)
	return b.String()
}

func writeBlockers(b *strings.Builder, bl []Blocker) {
	if len(bl) == 0 {
		b.WriteString(" (nothing found: still in progress)")
	}
	for _, x := range bl {
		fmt.Fprintf(b, "\n  %s: %s", x.Service, x.What)
		for _, s := range x.Stacks {
			for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
				b.WriteString("\n      ")
				b.WriteString(line)
			}
		}
	}
}

func (e *BlockedError) Unwrap() []error { return []error{ErrBlocked, e.Cause} }

// HasInstancesError is Unload's refusal: instances of the driver's classes
// are still alive, with what keeps each of them.
type HasInstancesError struct {
	Driver    string
	Instances map[string]int // class → live instances
	Blockers  []Blocker
	Cause     error
}

func (e *HasInstancesError) Error() string {
	classes := make([]string, 0, len(e.Instances))
	for c := range e.Instances {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	var b strings.Builder
	fmt.Fprintf(&b, "unload %s: classes have instances:", e.Driver)
	for i, c := range classes {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s(%d)", c, e.Instances[c])
	}
	b.WriteString("; held by:")
	writeBlockers(&b, e.Blockers)
	return b.String()
}

func (e *HasInstancesError) Unwrap() []error {
	if e.Cause == nil {
		return []error{ErrHasInstances}
	}
	return []error{ErrHasInstances, e.Cause}
}
