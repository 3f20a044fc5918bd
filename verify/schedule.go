package verify

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Fault is one planned fault: Kind at the Skip-th arrival (from 0) at Step.
type Fault struct {
	Kind string
	Step Step
	Skip int
	// Op is what a "block" fault runs while it holds the step.
	Op string
}

func (f Fault) String() string {
	s := f.Kind + "@" + string(f.Step)
	if f.Skip > 0 {
		s += "+" + strconv.Itoa(f.Skip)
	}
	if f.Op != "" {
		s += "(" + f.Op + ")"
	}
	return s
}

// Schedule is one run's plan: the faults armed, how long applications do
// I/O before the teardown, the teardown operations in order, and whether
// the first application is a process (and takes a direct call channel).
type Schedule struct {
	Faults   []Fault
	Teardown []string
	IO       time.Duration
	// Jitter is the share of all step arrivals delayed by up to 300 µs.
	Jitter float64
	// Procs: application 0 of each driver is a process (else embedded).
	Procs bool
	// Direct: that process takes the direct call channel an
	// out-of-process driver offers, so its calls go to the driver's
	// process, past the daemon, where the call step's faults are not
	// injected (they still fire at the embedded application's calls).
	// Implies Procs.
	Direct bool
	// Seed derived a random schedule (and seeds its jitter).
	Seed uint64
}

// Teardown operations.
const (
	OpAppKill   = "app-kill"  // application 0 crashes (SIGKILL for a process)
	OpAppClose  = "app-close" // application 1 closes and exits
	OpUnplug    = "unplug"    // the device is pulled
	OpUnload    = "unload"    // the driver under test is unloaded (unload:NAME: another)
	OpTerminate = "terminate" // an administrator terminates its instance, 15 ms deadline (terminate:NAME)
)

// DefaultTeardown is what a systematic schedule does after its fault.
var DefaultTeardown = []string{OpAppKill, OpTerminate, OpUnplug}

func validOp(op string) bool {
	base, arg, hasArg := strings.Cut(op, ":")
	switch base {
	case OpAppKill, OpAppClose, OpUnplug:
		return !hasArg
	case OpUnload, OpTerminate:
		return !hasArg || validName(arg)
	}
	return false
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// String is the schedule's one-line form, which ParseSchedule reads back:
//
//	faults=unplug@start,panic@stop+1 teardown=app-kill,unplug io=1ms jitter=0.12 procs direct seed=42
func (s Schedule) String() string {
	var fs []string
	for _, f := range s.Faults {
		fs = append(fs, f.String())
	}
	out := fmt.Sprintf("faults=%s teardown=%s io=%s", strings.Join(fs, ","), strings.Join(s.Teardown, ","), ioString(s.IO))
	if s.Jitter > 0 {
		out += " jitter=" + strconv.FormatFloat(s.Jitter, 'f', -1, 64)
	}
	if s.Procs || s.Direct {
		out += " procs"
	}
	if s.Direct {
		out += " direct"
	}
	if s.Seed != 0 {
		out += " seed=" + strconv.FormatUint(s.Seed, 10)
	}
	return out
}

// ioString writes a duration in ASCII units (us, not µs), exact.
func ioString(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	case d%time.Microsecond == 0:
		return strconv.FormatInt(int64(d/time.Microsecond), 10) + "us"
	}
	return strconv.FormatInt(int64(d), 10) + "ns"
}

// ErrBadSchedule is wrapped by every ParseSchedule error.
var ErrBadSchedule = errors.New("bad schedule")

const maxScheduleFaults = 64

// ParseSchedule reads what Schedule.String wrote. Fault kinds must be
// registered and steps known; it refuses anything else with a message
// naming the part it could not read.
func ParseSchedule(text string) (Schedule, error) {
	var s Schedule
	bad := func(format string, args ...any) (Schedule, error) {
		return Schedule{}, fmt.Errorf("%w: %s", ErrBadSchedule, fmt.Sprintf(format, args...))
	}
	if len(text) > 4096 {
		return bad("longer than 4096 bytes")
	}
	seen := map[string]bool{}
	for _, field := range strings.Fields(text) {
		key, val, _ := strings.Cut(field, "=")
		if seen[key] {
			return bad("%s given twice", key)
		}
		seen[key] = true
		switch key {
		case "faults":
			if val == "" {
				continue
			}
			parts := strings.Split(val, ",")
			if len(parts) > maxScheduleFaults {
				return bad("more than %d faults", maxScheduleFaults)
			}
			for _, p := range parts {
				f, err := parseFault(p)
				if err != nil {
					return bad("fault %q: %v", p, err)
				}
				s.Faults = append(s.Faults, f)
			}
		case "teardown":
			if val == "" {
				continue
			}
			for _, op := range strings.Split(val, ",") {
				if !validOp(op) {
					return bad("teardown: unknown operation %q", op)
				}
				s.Teardown = append(s.Teardown, op)
			}
		case "io":
			d, err := time.ParseDuration(val)
			if err != nil || d < 0 || d > time.Minute {
				return bad("io=%q: want a duration from 0 to 1m", val)
			}
			s.IO = d
		case "jitter":
			j, err := strconv.ParseFloat(val, 64)
			if err != nil || !(j >= 0 && j <= 1) {
				return bad("jitter=%q: want a share from 0 to 1", val)
			}
			s.Jitter = j
		case "procs":
			if val != "" || strings.Contains(field, "=") {
				return bad("procs takes no value")
			}
			s.Procs = true
		case "direct":
			if val != "" || strings.Contains(field, "=") {
				return bad("direct takes no value")
			}
			s.Direct, s.Procs = true, true
		case "seed":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return bad("seed=%q: want a number", val)
			}
			s.Seed = n
		default:
			return bad("unknown field %q (want faults, teardown, io, jitter, procs, direct, seed)", key)
		}
	}
	return s, nil
}

func parseFault(p string) (Fault, error) {
	var f Fault
	if i := strings.IndexByte(p, '('); i >= 0 {
		if !strings.HasSuffix(p, ")") {
			return f, errors.New("unclosed (")
		}
		f.Op = p[i+1 : len(p)-1]
		if !validOp(f.Op) {
			return f, fmt.Errorf("unknown operation %q", f.Op)
		}
		p = p[:i]
	}
	kind, at, ok := strings.Cut(p, "@")
	if !ok {
		return f, errors.New("want KIND@STEP[+N]")
	}
	if _, ok := lookupFault(kind); !ok {
		return f, fmt.Errorf("unknown fault kind %q", kind)
	}
	step, skip, hasSkip := strings.Cut(at, "+")
	if !knownStep(Step(step)) {
		return f, fmt.Errorf("unknown step %q", step)
	}
	if hasSkip {
		n, err := strconv.Atoi(skip)
		if err != nil || n < 0 || n > 1000 {
			return f, fmt.Errorf("+%q: want 0 to 1000", skip)
		}
		f.Skip = n
	}
	if (f.Op != "") != (kind == "block") {
		return f, errors.New("an operation in parentheses goes with block, and only with it")
	}
	f.Kind, f.Step = kind, Step(step)
	return f, nil
}
