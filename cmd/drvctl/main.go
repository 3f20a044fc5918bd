// Command drvctl is drvkit's daemon and command-line tool.
//
//	drvctl serve [--sim FILE]       run the daemon (netlink + coldplug, or a simulated bus)
//	             [--drivers LIST] [--personality name=N,driver=D,KEY=VALUE...]...
//	             [--drivers-dir DIR] [--allow-root-drivers] [--usb-hold=false]
//	drvctl drivers [-o FMT]         the drivers: built-in and bundles, state, instances, last error (text, json)
//	drvctl load PATH                load a driver bundle (manifest.toml or its directory)
//	drvctl inspect [-l] [-o FMT]    the registry as a tree (text, json, dot)
//	drvctl monitor [--env] [--replay] [-o FMT]
//	                                live kernel uevents and lifecycle steps (--replay: since the daemon started)
//	drvctl unload DRIVER [--force]  terminate every instance of a driver and unload it
//	drvctl terminate ID             terminate one service
//	drvctl leaks [-o FMT]           outstanding references (text, json, pprof)
//	drvctl why ID                   the chains of holders keeping a service alive
//	drvctl unhold [--state-dir DIR] lift the USB gates a killed daemon left (serve --usb-hold)
//	drvctl verify DRIVER|BUNDLE     explore a driver through every lifecycle fault (no daemon)
//
// Every command but serve talks to the daemon over its Unix socket:
// --socket, else $DRVCTL_SOCKET, else /run/drvkit/drvkit.sock for root and
// $XDG_RUNTIME_DIR/drvkit.sock for anyone else who has one; never a
// world-writable directory.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Exit codes: 0 success, 1 the operation failed, 2 the command line is wrong.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// errUsage marks an error in how drvctl was called; run prints the
// command's usage after it and exits 2.
var errUsage = errors.New("usage")

type usageError struct {
	msg string
	// noUsage: the command line is well formed but names something the
	// daemon does not know (an ID, a driver); the usage would not help.
	noUsage bool
}

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return errUsage }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// env is what a command may touch of the outside world, so tests can run
// commands in-process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	uid            int
}

type command struct {
	name    string
	args    string // the positional arguments, for usage
	summary string
	// setup declares the command's flags on fs and returns the function
	// that runs it once fs has parsed the command line.
	setup func(fs *flag.FlagSet, e *env) func(args []string) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

func main() {
	os.Exit(run(os.Args[1:], &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, uid: os.Getuid()}))
}

func run(args []string, e *env) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version" || args[0] == "-V") {
		args = []string{"version"}
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		writeUsage(e.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "drvctl: unknown command %q\n\n", args[0])
		writeUsage(e.stderr)
		return exitUsage
	}
	fs := flag.NewFlagSet("drvctl "+c.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: drvctl %s [flags] %s\n  %s\n\nflags:\n", c.name, c.args, c.summary)
		printFlags(e.stderr, fs)
	}
	exec := c.setup(fs, e)
	positional, err := parseInterspersed(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage // flag has printed the error and the usage
	}
	err = exec(positional)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.stderr, "drvctl %s: %v\n", c.name, err)
		var ue *usageError
		if !errors.As(err, &ue) || !ue.noUsage {
			fs.Usage()
		}
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "drvctl %s: %v\n", c.name, err)
		return exitFail
	}
}

// printFlags is flag.PrintDefaults as the documentation writes flags: a
// long flag with two dashes (--socket), a one-letter flag with one (-o).
// Both spellings parse.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			arg = ""
		}
		line := "  " + dashes(f.Name)
		if arg != "" {
			line += " " + arg
		}
		def := f.DefValue
		if def != "" && def != "false" && def != "0" && !strings.Contains(usage, "(default") {
			if _, ok := f.Value.(*stringsFlag); !ok {
				usage += fmt.Sprintf(" (default %s)", def)
			}
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
	})
}

// parseInterspersed parses flags wherever they stand among the positional
// arguments (drvctl why 12 --socket S), as users of ip and systemctl
// expect; everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		consumed := len(args) - fs.NArg()
		if consumed > 0 && args[consumed-1] == "--" {
			return append(positional, fs.Args()...), nil
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func writeUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: drvctl COMMAND [flags] [args]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %-10s %s\n", n, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'drvctl COMMAND -h' for a command's flags.")
}

// socketFlag declares --socket on fs and returns the resolved path getter.
func socketFlag(fs *flag.FlagSet, e *env) func() string {
	p := fs.String("socket", "", "daemon socket `path` (default $DRVCTL_SOCKET, else $XDG_RUNTIME_DIR/drvkit.sock for a user who has a daemon there, else /run/drvkit/drvkit.sock)")
	return func() string { return socketPath(*p, e) }
}

func socketPath(flagValue string, e *env) string {
	if flagValue != "" {
		return flagValue
	}
	if v := e.getenv("DRVCTL_SOCKET"); v != "" {
		return v
	}
	if e.uid == 0 {
		return systemSocket
	}
	// A daemon of the user's own, if there is one; else the system's,
	// which every local user may read by default.
	if d := e.getenv("XDG_RUNTIME_DIR"); d != "" {
		p := filepath.Join(d, "drvkit.sock")
		if fi, err := os.Lstat(p); err == nil && fi.Mode().Type() == os.ModeSocket {
			return p
		}
	}
	// The system daemon's: never a world-writable directory (/tmp), where
	// another user could listen first.
	return systemSocket
}

// systemSocket is the system daemon's socket (drvkit.service).
const systemSocket = "/run/drvkit/drvkit.sock"

// prettyFlag declares -p/--pretty: JSON is one compact line per document
// by default (iproute2's -j), indented with -p. inspect has --pretty alone:
// its -p shows parents, as the query flags of ioreg and udevadm do.
func prettyFlag(fs *flag.FlagSet) *bool {
	p := new(bool)
	fs.BoolVar(p, "pretty", false, "pretty-print JSON (indented); the default is compact, one line")
	if fs.Lookup("p") == nil {
		fs.BoolVar(p, "p", false, "same as --pretty")
	}
	return p
}

// writeJSONValue writes v as one compact line, or indented when pretty.
func writeJSONValue(w io.Writer, v any, pretty bool) error {
	enc := json.NewEncoder(w)
	if pretty {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

// writeRawJSON prints a JSON document received whole from the daemon, as
// writeJSONValue would have printed its decoded value.
func writeRawJSON(w io.Writer, raw json.RawMessage, pretty bool) error {
	if pretty {
		var b bytes.Buffer
		if err := json.Indent(&b, raw, "", "  "); err != nil {
			return err
		}
		b.WriteByte('\n')
		_, err := w.Write(b.Bytes())
		return err
	}
	if _, err := w.Write(raw); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// outputFlag declares -o with the allowed formats; the first is the default.
func outputFlag(fs *flag.FlagSet, formats ...string) func() (string, error) {
	v := &choiceValue{v: formats[0], choices: formats}
	fs.Var(v, "o", "output `format`: "+strings.Join(formats, ", "))
	return func() (string, error) {
		for _, f := range formats {
			if v.v == f {
				return f, nil
			}
		}
		return "", usagef("unknown output format %q (want %s)", v.v, strings.Join(formats, ", "))
	}
}

// choiceValue is a flag with a fixed set of values, which shell
// completion offers. A value outside the set is refused by whoever reads
// the flag (so that the message is the command's, as a usage error).
type choiceValue struct {
	v       string
	choices []string
}

func (c *choiceValue) String() string {
	if c == nil {
		return ""
	}
	return c.v
}
func (c *choiceValue) Set(s string) error { c.v = s; return nil }
