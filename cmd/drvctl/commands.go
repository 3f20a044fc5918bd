package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// The client commands: each dials the daemon, makes one administrative call
// (monitor opens a stream), and renders the answer.

func init() {
	register(&command{name: "inspect", args: "[ID|Class@name|name|/devices/PATH]", summary: "show the registry as a tree (like ioreg)", setup: setupInspect})
	register(&command{name: "unload", args: "DRIVER", summary: "terminate every instance of a driver and unload it", setup: setupUnload})
	register(&command{name: "terminate", args: "ID", summary: "terminate one service and wait until it is freed", setup: setupTerminate})
	register(&command{name: "leaks", summary: "report outstanding references (text, json, pprof)", setup: setupLeaks})
	register(&command{name: "why", args: "ID", summary: "show the chains of holders keeping a service alive", setup: setupWhy})
	register(&command{name: "monitor", summary: "print kernel uevents and lifecycle steps as they happen", setup: setupMonitor})
	register(&command{name: "sim", args: "STEP...", summary: "run scenario steps on a daemon's simulated bus (e.g. 'unplug 2-1')", setup: setupSim})
}

// daemonError is a failure to reach the daemon, with the socket it tried.
// It tells a daemon that is not there (no socket, or a stale one) from a
// socket the user may not use: "is it running?" is no help to someone
// the socket's permissions keep out.
type daemonError struct {
	path string
	uid  int
	err  error
}

func (e *daemonError) Error() string {
	var errno syscall.Errno
	if !errors.As(e.err, &errno) {
		return fmt.Sprintf("cannot reach the drvkit daemon at %s: %v", e.path, daemonAnswer(e.err))
	}
	// The root cause alone, without the layers that wrapped it.
	switch errno {
	case syscall.EACCES, syscall.EPERM:
		return fmt.Sprintf("cannot reach the drvkit daemon at %s: %v (uid %d may not use the socket: run as root, "+
			"or as a member of the group 'drvctl serve --socket-gid' gives it, and check the directories above it)", e.path, errno, e.uid)
	case syscall.ENOENT, syscall.ECONNREFUSED, syscall.ENOTDIR:
		return fmt.Sprintf("cannot reach the drvkit daemon at %s: %v (is 'drvctl serve' running? --socket or DRVCTL_SOCKET choose the path)", e.path, errno)
	}
	return fmt.Sprintf("cannot reach the drvkit daemon at %s: %v", e.path, errno)
}
func (e *daemonError) Unwrap() error { return e.err }

// dialAs is who drvctl runs as, for the messages of daemonError.
var dialAs = os.Getuid()

func dial(ctx context.Context, path string) (*userclient.Client, error) {
	c, err := userclient.Dial(ctx, path, userclient.WithClientName("drvctl"))
	if err != nil {
		return nil, &daemonError{path: path, uid: dialAs, err: err}
	}
	return c, nil
}

// call makes one administrative call and decodes its JSON result into res
// (if not nil); it returns the raw data part.
func call(ctx context.Context, path, op string, args, res any) ([]byte, error) {
	c, err := dial(ctx, path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out, data, err := c.Admin(ctx, op, args, nil)
	if err != nil {
		return nil, daemonAnswer(err)
	}
	if res != nil && len(out) > 0 {
		if err := json.Unmarshal(out, res); err != nil {
			return nil, fmt.Errorf("daemon sent a malformed %s answer: %w", op, err)
		}
	}
	return data, nil
}

// callTo is call with the answer written to w as it arrives, and a
// newline after it.
func callTo(ctx context.Context, path, op string, args any, w io.Writer) error {
	c, err := dial(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.AdminTo(ctx, op, args, nil, w); err != nil {
		return daemonAnswer(err)
	}
	_, err = io.WriteString(w, "\n")
	return err
}

// daemonAnswer turns an error of a call to the daemon into what drvctl
// prints: the daemon's message alone, without the layers of the client
// library ("admin why: …"); an ID or a
// driver the daemon does not know is a command-line error (exit 2). A
// connection the daemon closed says so.
func daemonAnswer(err error) error {
	var re *userclient.RemoteError
	if !errors.As(err, &re) {
		if errors.Is(err, userclient.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return &lostError{err: err}
		}
		return err
	}
	switch re.Code {
	case wire.CodeNoService:
		return &usageError{msg: re.Message, noUsage: true}
	case wire.CodeClosed:
		// The server sends it to every connection as it shuts down.
		return &lostError{err: err, shutdown: true}
	}
	return &remoteError{re: re}
}

// saidError is err said in drvctl's words, matchable as err.
type saidError struct {
	msg string
	err error
}

func (e *saidError) Error() string { return e.msg }
func (e *saidError) Unwrap() error { return e.err }

// lostError: the daemon closed the connection (it stopped, or dropped this
// client), matchable as the error it wraps.
type lostError struct {
	err      error
	shutdown bool // the daemon said it is shutting down
}

func (e *lostError) Error() string {
	if e.shutdown {
		return "the daemon shut down"
	}
	return "the daemon closed the connection"
}
func (e *lostError) Unwrap() error { return e.err }

// remoteError is a failure the daemon reported, shown as its message and
// matchable with errors.Is/As like the RemoteError it wraps.
type remoteError struct{ re *userclient.RemoteError }

func (e *remoteError) Error() string {
	if e.re.Code == wire.CodePermission {
		// The server's message starts with the sentinel's text, whatever
		// the library calls it; drvctl says it in its own words.
		return "permission denied: " + strings.TrimPrefix(e.re.Message, userclient.ErrPermission.Error()+": ")
	}
	return e.re.Message
}
func (e *remoteError) Unwrap() error { return e.re }

func parseID(args []string) (uint64, error) {
	if len(args) != 1 {
		return 0, usagef("want exactly one service ID, got %d arguments", len(args))
	}
	id, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || id == 0 {
		return 0, usagef("%q is not a service ID (see drvctl inspect)", args[0])
	}
	return id, nil
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("unexpected arguments %q", args)
	}
	return nil
}

func setupInspect(fs *flag.FlagSet, e *env) func([]string) error {
	sock := socketFlag(fs, e)
	long := fs.Bool("l", false, "show every service's properties")
	format := outputFlag(fs, "text", "json", "dot")
	var q inspectQuery
	fs.StringVar(&q.Class, "c", "", "only services of this `class` (a glob: USB*), each with its subtree, as ioreg -c")
	fs.StringVar(&q.Name, "n", "", "only services of this `name` (a glob: the part after @), each with its subtree, as ioreg -n")
	fs.IntVar(&q.Depth, "d", 0, "show `depth` levels of each tree (1: the service alone; 0: all), as ioreg -d")
	fs.BoolVar(&q.Parents, "p", false, "also show each selected service's providers up to the root, as udevadm info -a walks the parents")
	fs.BoolVar(&q.Parents, "parents", false, "same as -p")
	props := propMatchFlag(fs, "property", "only services with this property: `KEY=VALUE` (repeatable; VALUE a glob, or a number in decimal or 0x-hex: idVendor=0x0781)")
	pretty := prettyFlag(fs)
	return func(args []string) error {
		if len(args) > 1 {
			return usagef("inspect takes at most one service (ID, Class@name, name or device path), got %q", args)
		}
		if len(args) == 1 {
			q.Target = args[0]
		}
		if q.Depth < 0 {
			return usagef("-d %d: want a depth of 1 or more (0: all)", q.Depth)
		}
		q.Properties = *props
		f, err := format()
		if err != nil {
			return err
		}
		if f == "json" {
			// The daemon's document is the output, not decoded and encoded
			// again — at 100,000 services that was most of the command's
			// time: compact, it goes to stdout as it arrives.
			if !*pretty {
				return callTo(context.Background(), sock(), opInspect, &q, e.stdout)
			}
			var raw json.RawMessage
			if _, err := call(context.Background(), sock(), opInspect, &q, &raw); err != nil {
				return err
			}
			return writeRawJSON(e.stdout, raw, true)
		}
		var doc inspectDoc
		if _, err := call(context.Background(), sock(), opInspect, &q, &doc); err != nil {
			return err
		}
		switch f {
		case "dot":
			return writeDOT(e.stdout, &doc)
		}
		return writeTree(e.stdout, &doc, *long)
	}
}

// stringsFlag is a repeatable flag whose values may also be
// comma-separated.
type stringsFlag []string

func (f *stringsFlag) String() string { return strings.Join(*f, ",") }
func (f *stringsFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*f = append(*f, s)
		}
	}
	return nil
}

// propMatchesFlag is a repeatable KEY=VALUE flag.
type propMatchesFlag []propMatch

func (f *propMatchesFlag) String() string {
	parts := make([]string, len(*f))
	for i, m := range *f {
		parts[i] = m.String()
	}
	return strings.Join(parts, " ")
}
func (f *propMatchesFlag) Set(v string) error {
	m, err := parsePropMatch(v)
	if err != nil {
		return err
	}
	*f = append(*f, m)
	return nil
}

func propMatchFlag(fs *flag.FlagSet, name, usage string) *propMatchesFlag {
	f := new(propMatchesFlag)
	fs.Var(f, name, usage)
	return f
}

func setupUnload(fs *flag.FlagSet, e *env) func([]string) error {
	sock := socketFlag(fs, e)
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for every instance to be freed")
	force := fs.Bool("force", false, "unload even if instances remain at the timeout (they go on terminating); without it the driver stays loaded")
	return func(args []string) error {
		if len(args) != 1 {
			return usagef("want exactly one driver name, got %d arguments", len(args))
		}
		return unload(sock(), args[0], *timeout, *force, e.stdout)
	}
}

// unload runs the unload call and, while it waits, shows what still
// blocks: redrawn in place on a terminal, as plain lines when they change
// otherwise.
func unload(path, name string, timeout time.Duration, force bool, w io.Writer) error {
	ctx := context.Background()
	c, err := dial(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	done := make(chan error, 1)
	var res unloadResult
	go func() {
		out, _, err := c.Admin(ctx, opUnload, unloadArgs{Driver: name, Timeout: timeout, Force: force}, nil)
		if err == nil && len(out) > 0 {
			err = json.Unmarshal(out, &res)
		}
		done <- err
	}()
	tty := isTerminal(w)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last string
	drawn := 0
	for {
		select {
		case err := <-done:
			if tty && drawn > 0 {
				fmt.Fprintf(w, "\x1b[%dA\x1b[J", drawn)
			}
			if err != nil {
				return daemonAnswer(err)
			}
			unloadDone(w, name, res)
			return nil
		case <-tick.C:
			var bl []blockerEntry
			out, _, err := c.Admin(ctx, opBlockers, unloadArgs{Driver: name}, nil)
			if err != nil || json.Unmarshal(out, &bl) != nil || len(bl) == 0 {
				continue
			}
			var b strings.Builder
			fmt.Fprintf(&b, "waiting for %s:\n", name)
			for _, x := range bl {
				fmt.Fprintf(&b, "  %s: %s\n", x.Service, x.What)
			}
			text := b.String()
			if text == last {
				continue
			}
			if tty && drawn > 0 {
				fmt.Fprintf(w, "\x1b[%dA\x1b[J", drawn)
			}
			io.WriteString(w, text)
			last, drawn = text, strings.Count(text, "\n")
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return isTerminalFd(f.Fd())
}

func setupTerminate(fs *flag.FlagSet, e *env) func([]string) error {
	sock := socketFlag(fs, e)
	return func(args []string) error {
		id, err := parseID(args)
		if err != nil {
			return err
		}
		var res terminateResult
		if _, err := call(context.Background(), sock(), opTerminate, idArgs{ID: id}, &res); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "terminated %s: freed\n", res.Service)
		return nil
	}
}

func setupLeaks(fs *flag.FlagSet, e *env) func([]string) error {
	sock := socketFlag(fs, e)
	format := outputFlag(fs, "text", "json", "pprof")
	out := fs.String("f", "", "write to `file` instead of standard output (pprof: open it with go tool pprof -http=: FILE)")
	all := fs.Bool("all", false, "report every live object, not only those that should be gone (terminated services not yet freed, objects no active service owns)")
	limit := fs.Int("limit", defaultLeaksLimit, "detail at most `n` objects (0: every one); the summaries always count every object")
	after := fs.Uint64("after", 0, "detail the objects whose ID is above `id` (the next page, as the report says)")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		f, err := format()
		if err != nil {
			return err
		}
		if *limit < 0 {
			return usagef("--limit %d: want 0 (every object) or more", *limit)
		}
		data, err := call(context.Background(), sock(), opLeaks, leaksArgs{Format: f, All: *all, Limit: *limit, After: *after}, nil)
		if err != nil {
			return err
		}
		if *out != "" {
			return os.WriteFile(*out, data, 0o644)
		}
		if f == "pprof" && isTerminal(e.stdout) {
			return usagef("a pprof profile is binary: use -f FILE or redirect standard output")
		}
		_, err = e.stdout.Write(data)
		return err
	}
}

func setupWhy(fs *flag.FlagSet, e *env) func([]string) error {
	sock := socketFlag(fs, e)
	return func(args []string) error {
		id, err := parseID(args)
		if err != nil {
			return err
		}
		data, err := call(context.Background(), sock(), opWhy, idArgs{ID: id}, nil)
		if err != nil {
			return err
		}
		_, err = e.stdout.Write(data)
		return err
	}
}

func setupSim(fs *flag.FlagSet, e *env) func([]string) error {
	sock := socketFlag(fs, e)
	file := fs.String("f", "", "read the steps from a scenario `file` (after any given as arguments)")
	return func(args []string) error {
		steps := strings.Join(args, "\n")
		if *file != "" {
			b, err := os.ReadFile(*file)
			if err != nil {
				return err
			}
			steps += "\n" + string(b)
		}
		if strings.TrimSpace(steps) == "" {
			return usagef("want scenario steps, e.g. 'unplug 2-1', or -f FILE")
		}
		_, err := call(context.Background(), sock(), opSim, simArgs{Steps: steps + "\n"}, nil)
		return err
	}
}

func setupMonitor(fs *flag.FlagSet, e *env) func([]string) error {
	sock := socketFlag(fs, e)
	withEnv := fs.Bool("env", false, "print each kernel event's properties")
	replay := fs.Bool("replay", false, "first print the events the daemon kept since it started (the last 4096), then follow")
	format := outputFlag(fs, "text", "json")
	var f monitorFilter
	for _, name := range []string{"subsystem", "s", "subsystem-match"} {
		fs.Var((*stringsFlag)(&f.Subsystems), name, "only uevents of this `subsystem` (repeatable, a glob: usb, scsi*), as udevadm monitor --subsystem-match")
	}
	for _, name := range []string{"class", "c"} {
		fs.Var((*stringsFlag)(&f.Classes), name, "only lifecycle steps of services of this `class` (repeatable, a glob: USB*)")
	}
	for _, name := range []string{"kind", "k"} {
		fs.Var((*stringsFlag)(&f.Kinds), name, "only events of this `kind`: kernel or lifecycle (repeatable); without it, the kinds the other filters concern")
	}
	for _, name := range []string{"property", "property-match"} {
		fs.Var((*propMatchesFlag)(&f.Properties), name, "only uevents with this property: `KEY=VALUE` (repeatable, VALUE a glob: ID_VENDOR_ID=0781)")
	}
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := f.check(); err != nil {
			return usagef("%v", err)
		}
		fm, err := format()
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return monitor(ctx, sock(), monitorOptions{asJSON: fm == "json", withEnv: *withEnv, replay: *replay, filter: f}, e.stdout)
	}
}

type monitorOptions struct {
	asJSON, withEnv, replay bool
	filter                  monitorFilter
}

// monitor prints events until ctx ends (nil) or the daemon goes away (an
// error saying so). With replay it prints the daemon's history first: the
// stream is opened before the history is fetched, so every event is in one
// or the other, and events in both (by seq) are printed once.
func monitor(ctx context.Context, path string, o monitorOptions, w io.Writer) error {
	asJSON, withEnv, replay := o.asJSON, o.withEnv, o.replay
	c, err := dial(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	h, err := c.Open(ctx, userclient.Match{Class: monitorClass})
	if err != nil {
		if errors.Is(err, userclient.ErrPermission) {
			// The server names the monitor's internal class.
			said := daemonAnswer(err).Error()
			return &saidError{msg: strings.Replace(said, "opening "+monitorClass, "the monitor", 1), err: err}
		}
		return daemonAnswer(err)
	}
	notes := h.Notifications()
	if !o.filter.empty() {
		// The daemon filters from now on; events already on their way are
		// filtered here as well.
		in, _ := json.Marshal(&o.filter)
		if _, err := h.Call(ctx, monitorMethodFilter, in); err != nil && !errors.Is(err, userclient.ErrNoMethod) {
			return daemonAnswer(err)
		}
	}
	if !asJSON {
		fmt.Fprintln(w, "monitor will print the received events for:\nKERNEL - the kernel uevent\nLIFECYCLE - a step of a service's lifecycle")
		fmt.Fprintln(w)
	}
	enc := json.NewEncoder(w)
	print := func(ev *monitorEvent) error {
		if asJSON {
			return enc.Encode(ev)
		}
		return writeMonitorLine(w, ev, withEnv)
	}
	var printed uint64 // the last seq printed from the history
	if replay {
		var hist historyResult
		out, _, err := c.Admin(ctx, opHistory, &o.filter, nil)
		if err != nil {
			return daemonAnswer(err)
		}
		if err := json.Unmarshal(out, &hist); err != nil {
			return fmt.Errorf("daemon sent a malformed monitor history: %w", err)
		}
		if hist.Dropped > 0 {
			if err := print(&monitorEvent{Kind: "lost", Count: hist.Dropped}); err != nil {
				return err
			}
		}
		for i := range hist.Events {
			if err := print(&hist.Events[i]); err != nil {
				return err
			}
			printed = hist.Events[i].Seq
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case n, ok := <-notes:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				if err := c.Err(); err != nil {
					if lost := daemonAnswer(err); errors.As(lost, new(*lostError)) {
						return lost
					}
					return fmt.Errorf("monitor ended: %w", daemonAnswer(err))
				}
				return errors.New("the daemon closed the monitor stream")
			}
			if n.Type != monitorNotificationType {
				continue
			}
			var ev monitorEvent
			if err := json.Unmarshal(n.Data, &ev); err != nil {
				return fmt.Errorf("daemon sent a malformed monitor event: %w", err)
			}
			if ev.Seq != 0 && ev.Seq <= printed || !o.filter.match(&ev) {
				continue // already printed from the history, or sent before the filter was set
			}
			if err := print(&ev); err != nil {
				return err
			}
		}
	}
}
