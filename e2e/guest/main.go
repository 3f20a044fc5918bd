//go:build linux

// Command e2e-guest is the agent that runs as PID 1 in the QEMU guest of the
// end-to-end tests (see package e2e/agentproto for the protocol).
//
//	e2e-guest agent [-ctl /dev/ttyS1] [-modules /etc/modules]
//
// It opens a uevent socket first, so that it sees the events of the modules
// it then loads, mounts configfs, prints "E2E boot PASS …" and "E2E ready" on
// the console and serves requests on the control port until poweroff.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/drvkit/drvkit/e2e/agentproto"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "agent" {
		fmt.Fprintln(os.Stderr, "usage: e2e-guest agent [-ctl DEV] [-modules FILE]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	ctl := fs.String("ctl", "/dev/ttyS1", "control port")
	mods := fs.String("modules", "/etc/modules", "modules to load: PATH [PARAMS] per line")
	fs.Parse(os.Args[2:])
	err := run(*ctl, *mods)
	fmt.Printf("E2E agent FAIL %v\n", err)
	if os.Getpid() == 1 {
		poweroff()
	}
	os.Exit(1)
}

type agent struct {
	start  time.Time
	hello  agentproto.Hello
	wmu    sync.Mutex
	out    *os.File
	uev    *ueventLog
	procs  *procTable
	closed chan struct{}

	subscribe sync.Once
}

func run(ctlPath, modsPath string) error {
	a := &agent{start: time.Now(), procs: newProcTable(), closed: make(chan struct{})}
	var err error
	if a.uev, err = listenUevents(); err != nil {
		return fmt.Errorf("uevent socket: %w", err)
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	a.hello.Kernel = unix.ByteSliceToString(uts.Release[:])
	a.hello.Modules, err = loadModules(modsPath)
	if err != nil {
		fmt.Printf("E2E boot FAIL %v\n", err)
		return err
	}
	if err := mountConfigfs(); err != nil {
		fmt.Printf("E2E boot FAIL %v\n", err)
		return err
	}
	ms := 0.0
	for _, m := range a.hello.Modules {
		ms += m.Ms
	}
	fmt.Printf("E2E boot PASS kernel=%s modules=%d load=%.0fms uptime=%.2fs\n",
		a.hello.Kernel, len(a.hello.Modules), ms, uptime())

	f, err := openRaw(ctlPath)
	if err != nil {
		return fmt.Errorf("control port %s: %w", ctlPath, err)
	}
	a.out = f
	go a.runScript()
	fmt.Println("E2E ready")
	return a.serve(f)
}

// runScript runs the requests passed on the kernel command line
// (drvkit.e2e=<base64url JSON array>), one after the other.
func (a *agent) runScript() {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		v, ok := strings.CutPrefix(f, "drvkit.e2e=")
		if !ok {
			continue
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
		var reqs []agentproto.Request
		if err == nil {
			err = json.Unmarshal(raw, &reqs)
		}
		if err != nil {
			fmt.Printf("E2E script FAIL bad drvkit.e2e: %v\n", err)
			return
		}
		for _, r := range reqs {
			a.handle(r, false)
		}
		fmt.Println("E2E script DONE")
	}
}

func (a *agent) serve(f *os.File) error {
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), agentproto.MaxLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		req, err := agentproto.DecodeRequest(line)
		if err != nil {
			// The id is unknown; the host's request times out and
			// the console says why.
			fmt.Printf("E2E request FAIL %v\n", err)
			continue
		}
		go a.handle(req, true)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("control port closed")
}

func (a *agent) send(v any) {
	if a.out == nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(agentproto.Response{Error: "marshal: " + err.Error()})
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.out.Write(append(b, '\n'))
}

func (a *agent) handle(req agentproto.Request, reply bool) {
	t0 := time.Now()
	res, err := a.dispatch(req)
	ms := float64(time.Since(t0).Microseconds()) / 1000
	resp := agentproto.Response{ID: req.ID, OK: err == nil, Ms: ms}
	if err != nil {
		resp.Error = err.Error()
		fmt.Printf("E2E %s FAIL %s\n", req.Op, oneLine(resp.Error))
	} else {
		if res != nil {
			b, merr := json.Marshal(res)
			if merr != nil {
				resp.OK, resp.Error = false, "marshal result: "+merr.Error()
			}
			resp.Result = b
		}
		fmt.Printf("E2E %s PASS %.1fms %s\n", req.Op, ms, summary(res))
	}
	if reply {
		a.send(resp)
	}
	if req.Op == agentproto.OpPoweroff && err == nil {
		poweroff()
	}
}

func (a *agent) dispatch(req agentproto.Request) (any, error) {
	args := func(v any) error {
		if len(req.Args) == 0 {
			return nil
		}
		dec := json.NewDecoder(strings.NewReader(string(req.Args)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("%s: bad arguments: %w", req.Op, err)
		}
		return nil
	}
	switch req.Op {
	case agentproto.OpHello:
		h := a.hello
		h.UptimeS = uptime()
		return h, nil
	case agentproto.OpSubscribe:
		// A second subscription would send every event twice.
		a.subscribe.Do(func() { go a.uev.stream(a.send, a.closed) })
		return nil, nil
	case agentproto.OpExec:
		var x agentproto.ExecArgs
		if err := args(&x); err != nil {
			return nil, err
		}
		return execute(x)
	case agentproto.OpStart:
		var x agentproto.StartArgs
		if err := args(&x); err != nil {
			return nil, err
		}
		return a.procs.start(x)
	case agentproto.OpSignal:
		var x agentproto.SignalArgs
		if err := args(&x); err != nil {
			return nil, err
		}
		return nil, a.procs.signal(x)
	case agentproto.OpWait:
		var x agentproto.WaitArgs
		if err := args(&x); err != nil {
			return nil, err
		}
		return a.procs.wait(x)
	case agentproto.OpUSBList:
		return listUSB()
	case agentproto.OpSGList:
		return listSG()
	case agentproto.OpInquiry:
		var x agentproto.InquiryArgs
		if err := args(&x); err != nil {
			return nil, err
		}
		return inquiry(x.Device)
	case agentproto.OpBOT:
		x := agentproto.BOTArgs{WriteLBA: -1}
		if err := args(&x); err != nil {
			return nil, err
		}
		return botCheck(x, func(ev string) { a.send(agentproto.Event{Event: ev}) })
	case agentproto.OpGadgetUp:
		var x agentproto.GadgetArgs
		if err := args(&x); err != nil {
			return nil, err
		}
		return gadgetUp(x)
	case agentproto.OpGadgetOff:
		var x agentproto.GadgetArgs
		if err := args(&x); err != nil {
			return nil, err
		}
		return nil, gadgetOff(x.Name)
	case agentproto.OpUevent:
		var x agentproto.UeventWaitArgs
		if err := args(&x); err != nil {
			return nil, err
		}
		return a.uev.wait(x.Match, timeout(x.TimeoutMs))
	case agentproto.OpPoweroff:
		return nil, nil
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}

func summary(v any) string {
	switch r := v.(type) {
	case nil:
		return ""
	case []agentproto.USBDevice:
		ids := make([]string, len(r))
		for i, d := range r {
			ids[i] = d.ID()
		}
		return "devices=" + strings.Join(ids, ",")
	case *agentproto.Inquiry:
		return fmt.Sprintf("%s vendor=%q product=%q rev=%q", r.Device, r.Vendor, r.Product, r.Revision)
	case *agentproto.Uevent:
		return r.String()
	case *agentproto.ExecResult:
		return fmt.Sprintf("exit=%d", r.Exit)
	}
	b, _ := json.Marshal(v)
	if len(b) > 200 {
		b = append(b[:200], "…"...)
	}
	return string(b)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " | ") }

func uptime() float64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return float64(ts.Nano()) / 1e9
}

func poweroff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	time.Sleep(time.Minute)
}
