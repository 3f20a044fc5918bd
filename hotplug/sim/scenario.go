package sim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrBadScenario is matched (errors.Is) by every *ScenarioError.
var ErrBadScenario = errors.New("bad scenario")

// ScenarioError is a scenario line that cannot be parsed or executed.
type ScenarioError struct {
	File string
	Line int
	Msg  string
}

func (e *ScenarioError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Is makes errors.Is(err, ErrBadScenario) true.
func (e *ScenarioError) Is(target error) bool { return target == ErrBadScenario }

// Step is one scenario line.
type Step struct {
	Line int
	Cmd  string            // "plug", "unplug", "dup", "bind", "unbind", "scsi-add", "scsi-remove", "hid-input", "hid-type", "wait", "seqnum"
	Arg  string            // port, H:C:T:L
	Opts map[string]string // key=value arguments
	Wait time.Duration     // for "wait"
	N    uint64            // for "seqnum"
}

// Scenario is a parsed scenario file. See the README of testdata/scenarios
// for the format.
type Scenario struct {
	Name  string
	Steps []Step
}

const (
	maxScenarioLine  = 4096
	maxScenarioSteps = 1 << 19 // after repeat expansion: room for plugging and unplugging 100k devices
	// maxScenarioWork bounds what expanding a scenario costs: steps
	// copied plus repeat iterations, so that neither a huge product of
	// counts nor a huge count over an empty body can spin.
	maxScenarioWork = 4 * maxScenarioSteps
)

// ParseScenario reads a scenario and checks it: the syntax of every line
// and, by a dry run, that every step makes sense in order (no unplug of a
// port that is empty, no LUN on a missing host). Errors say file and line.
func ParseScenario(name string, r io.Reader) (*Scenario, error) {
	return parseScenario(name, r, true)
}

// ParseScenarioFragment checks only the syntax of a scenario: its steps
// make sense only against a machine that already has devices, as the steps
// given to (*Sim).Inject do, which checks them when it runs them.
func ParseScenarioFragment(name, s string) (*Scenario, error) {
	return parseScenario(name, strings.NewReader(s), false)
}

func parseScenario(name string, r io.Reader, dryRun bool) (*Scenario, error) {
	sc, _, err := parseScenarioWork(name, r, dryRun)
	return sc, err
}

// parseScenarioWork is parseScenario that also says how much expansion
// work it did (the cost fuzz target bounds it).
func parseScenarioWork(name string, r io.Reader, dryRun bool) (*Scenario, int, error) {
	sc, work, err := expandScenario(name, r)
	if err != nil || !dryRun {
		return sc, work, err
	}
	// Dry run: semantic errors are found now, not halfway through a test.
	m := newMachine(1)
	for _, st := range sc.Steps {
		if _, err := m.exec(st); err != nil {
			return nil, work, &ScenarioError{File: name, Line: st.Line, Msg: err.Error()}
		}
	}
	return sc, work, nil
}

func expandScenario(name string, r io.Reader) (*Scenario, int, error) {
	sc := &Scenario{Name: name}
	work := 0
	br := bufio.NewScanner(r)
	br.Buffer(make([]byte, 1024), maxScenarioLine)
	line := 0
	// Open repeat blocks: where their body starts in sc.Steps, the count
	// and the line of the repeat.
	type block struct{ start, n, line int }
	var open []block
	for br.Scan() {
		line++
		st, ok, err := parseStep(br.Text())
		if err != nil {
			return nil, work, &ScenarioError{File: name, Line: line, Msg: err.Error()}
		}
		if !ok {
			continue
		}
		st.Line = line
		switch st.Cmd {
		case "repeat":
			if len(open) >= 4 {
				return nil, work, &ScenarioError{File: name, Line: line, Msg: "repeat: nested more than 4 deep"}
			}
			open = append(open, block{start: len(sc.Steps), n: int(st.N), line: line})
		case "end":
			if len(open) == 0 {
				return nil, work, &ScenarioError{File: name, Line: line, Msg: "end without repeat"}
			}
			b := open[len(open)-1]
			open = open[:len(open)-1]
			body := sc.Steps[b.start:]
			if len(sc.Steps)+len(body)*(b.n-1) > maxScenarioSteps {
				return nil, work, &ScenarioError{File: name, Line: b.line, Msg: fmt.Sprintf("repeat: more than %d steps in all", maxScenarioSteps)}
			}
			if len(body) > 0 { // an empty body repeated is nothing: no iterations to spin through
				body = slices.Clone(body)
				for range b.n - 1 {
					work += 1 + len(body)
					if work > maxScenarioWork {
						return nil, work, &ScenarioError{File: name, Line: b.line, Msg: fmt.Sprintf("repeat: expanding the scenario costs more than %d steps", maxScenarioWork)}
					}
					sc.Steps = append(sc.Steps, body...)
				}
			}
			if b.n == 0 {
				sc.Steps = sc.Steps[:b.start]
			}
		default:
			work++
			sc.Steps = append(sc.Steps, st)
		}
		if len(sc.Steps) > maxScenarioSteps {
			return nil, work, &ScenarioError{File: name, Line: line, Msg: fmt.Sprintf("more than %d steps", maxScenarioSteps)}
		}
	}
	if len(open) > 0 {
		return nil, work, &ScenarioError{File: name, Line: open[len(open)-1].line, Msg: "repeat without end"}
	}
	if err := br.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, work, &ScenarioError{File: name, Line: line + 1, Msg: fmt.Sprintf("line longer than %d bytes", maxScenarioLine)}
		}
		return nil, work, &ScenarioError{File: name, Line: line, Msg: err.Error()}
	}
	return sc, work, nil
}

// ParseScenarioString is ParseScenario over a string.
func ParseScenarioString(name, s string) (*Scenario, error) {
	return ParseScenario(name, strings.NewReader(s))
}

var stepKeys = map[string]map[string]bool{
	"plug": {"vid": true, "pid": true, "bcd": true, "class": true, "manufacturer": true, "product": true,
		"serial": true, "ifaces": true, "type": true, "vendor": true, "model": true, "rev": true, "hid": true},
	"hid-input":   {"iface": true, "report": true},
	"hid-type":    {"iface": true, "text": true},
	"scsi-add":    {"type": true, "vendor": true, "model": true, "rev": true},
	"scsi-remove": {},
	"unplug":      {},
	"dup":         {},
	"bind":        {"iface": true, "driver": true},
	"unbind":      {"iface": true},
}

func parseStep(text string) (Step, bool, error) {
	toks, err := tokenize(text)
	if err != nil || len(toks) == 0 {
		return Step{}, false, err
	}
	var st Step
	args := toks[1:]
	switch toks[0] {
	case "wait":
		if len(args) != 1 {
			return st, false, errors.New("wait: want one duration, e.g. wait 10ms")
		}
		d, err := time.ParseDuration(args[0])
		if err != nil || d < 0 || d > time.Hour {
			return st, false, fmt.Errorf("wait: %q is not a duration between 0 and 1h", args[0])
		}
		return Step{Cmd: "wait", Wait: d}, true, nil
	case "seqnum":
		if len(args) != 1 {
			return st, false, errors.New("seqnum: want one number")
		}
		n, err := strconv.ParseUint(args[0], 10, 63)
		if err != nil || n == 0 {
			return st, false, fmt.Errorf("seqnum: %q is not a positive number", args[0])
		}
		return Step{Cmd: "seqnum", N: n}, true, nil
	case "plug":
		if len(args) < 2 || args[0] != "usb" {
			return st, false, errors.New("plug: want plug usb PORT key=value [key=value...]")
		}
		st = Step{Cmd: "plug", Arg: args[1]}
		args = args[2:]
	case "unplug", "dup":
		if len(args) != 1 {
			return st, false, fmt.Errorf("%s: want %s PORT", toks[0], toks[0])
		}
		st = Step{Cmd: toks[0], Arg: args[0]}
		args = nil
	case "bind", "unbind":
		if len(args) < 2 {
			return st, false, fmt.Errorf("%s: want %s PORT iface=N%s", toks[0], toks[0], map[bool]string{true: " driver=NAME"}[toks[0] == "bind"])
		}
		st = Step{Cmd: toks[0], Arg: args[0]}
		args = args[1:]
	case "repeat":
		if len(args) != 1 {
			return st, false, errors.New("repeat: want repeat N (closed by end)")
		}
		n, err := strconv.ParseUint(args[0], 10, 31)
		if err != nil {
			return st, false, fmt.Errorf("repeat: %q is not a count", args[0])
		}
		return Step{Cmd: "repeat", N: n}, true, nil
	case "end":
		if len(args) != 0 {
			return st, false, errors.New("end takes no arguments")
		}
		return Step{Cmd: "end"}, true, nil
	case "hid":
		if len(args) < 2 || (args[0] != "input" && args[0] != "type") {
			return st, false, errors.New("hid: want hid input PORT report=HEX [iface=N] or hid type PORT text=S [iface=N]")
		}
		st = Step{Cmd: "hid-" + args[0], Arg: args[1]}
		args = args[2:]
	case "scsi":
		if len(args) < 2 || (args[0] != "add" && args[0] != "remove") {
			return st, false, errors.New("scsi: want scsi add|remove H:C:T:L [key=value...]")
		}
		st = Step{Cmd: "scsi-" + args[0], Arg: args[1]}
		args = args[2:]
	default:
		return st, false, fmt.Errorf("unknown command %q (want plug, unplug, dup, bind, unbind, scsi, hid, wait, seqnum, repeat, end)", toks[0])
	}
	st.Opts = map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return st, false, fmt.Errorf("%s: argument %q is not key=value", toks[0], a)
		}
		if !stepKeys[st.Cmd][k] {
			return st, false, fmt.Errorf("%s: unknown key %q", toks[0], k)
		}
		if _, dup := st.Opts[k]; dup {
			return st, false, fmt.Errorf("%s: key %q given twice", toks[0], k)
		}
		st.Opts[k] = v
	}
	return st, true, nil
}

// tokenize splits on blanks; "double quoted" tokens (Go syntax) may hold
// blanks; '#' starts a comment.
func tokenize(s string) ([]string, error) {
	var out []string
	for {
		s = strings.TrimLeft(s, " \t\r")
		if s == "" || s[0] == '#' {
			return out, nil
		}
		i := 0
		var tok strings.Builder
		for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\r' {
			if s[i] == '"' {
				q, err := strconv.QuotedPrefix(s[i:])
				if err != nil {
					return nil, fmt.Errorf("unterminated or invalid quoted string at %q", truncate(s[i:], 64))
				}
				u, _ := strconv.Unquote(q)
				if strings.ContainsAny(u, "\x00\n") {
					return nil, errors.New("quoted string holds NUL or newline")
				}
				tok.WriteString(u)
				i += len(q)
				continue
			}
			tok.WriteByte(s[i])
			i++
		}
		out = append(out, tok.String())
		s = s[i:]
	}
}

// truncate keeps error messages about hostile input short.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
