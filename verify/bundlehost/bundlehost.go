package bundlehost

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/host"
	"github.com/drvkit/drvkit/driver/host/wire"
	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/verify"
)

// Host runs a bundle's instances out of process for the verifier.
type Host struct {
	m   *bundle.Manifest
	log *slog.Logger

	mu  sync.Mutex
	cur *host.Host // this run's
}

var _ verify.RunHost = (*Host)(nil)

// New returns the verifier's host for bundle m; log gets the host's events
// and the driver processes' output (nil: discarded).
func New(m *bundle.Manifest, log *slog.Logger) *Host {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Host{m: m, log: log}
}

// BindRun makes this run's driver/host.Host on reg with the device
// resources res.
func (h *Host) BindRun(reg *driver.Registry, res *drivertable.Resources) (verify.HostRun, error) {
	var pmu sync.Mutex
	var pids []int
	hh := host.New(host.Config{Registry: reg, Resources: res, Log: h.log, TraceDrivers: true,
		Spawned: func(_ string, pid int) {
			pmu.Lock()
			pids = append(pids, pid)
			pmu.Unlock()
		}})
	h.mu.Lock()
	h.cur = hh
	h.mu.Unlock()
	check := func() []verify.Problem {
		pmu.Lock()
		spawned := append([]int(nil), pids...)
		pmu.Unlock()
		ps := leakProblems(hh.DriverLeaks(h.m.Name))
		for _, hang := range hh.DriverHangs(h.m.Name) {
			ps = append(ps, verify.Problem{Kind: "hang", Text: "the driver process had to be killed: " + hang})
		}
		return append(ps, strays(spawned, processSettle)...)
	}
	return verify.HostRun{Entry: hh.Entry(h.m), Quiesce: hh.Close, Check: check}, nil
}

// KillDriver SIGKILLs the process of instance s (verify's driver-kill).
func (h *Host) KillDriver(s *driver.Service) error {
	h.mu.Lock()
	hh := h.cur
	h.mu.Unlock()
	if hh == nil {
		return verify.ErrNoDriverProcess
	}
	return hh.KillDriver(s)
}

// processSettle: how long the check waits for a killed process group's
// members to go (SIGKILL is delivered asynchronously).
const processSettle = time.Second

// leakProblems turns the leak reports of driver processes into the
// verifier's problems, with the culprit the driver process named.
func leakProblems(rs []host.LeakReport) []verify.Problem {
	var out []verify.Problem
	for _, r := range rs {
		p := verify.Problem{Kind: "leak", Text: fmt.Sprintf("driver process %d of %s (instance %d) left %d object(s) alive after its Stop:\n%s",
			r.PID, r.Driver, r.Service, r.Leaks.Objects, strings.TrimRight(r.Leaks.Text, "\n"))}
		if c := r.Leaks.Culprit; c != nil {
			f := frame(*c)
			p.Culprit = &f
		}
		if len(r.Leaks.Stack) > 0 {
			st := &refcount.Stack{}
			for _, f := range r.Leaks.Stack {
				st.Frames = append(st.Frames, frame(f))
			}
			p.Stack = st
		}
		out = append(out, p)
	}
	return out
}

func frame(f wire.Frame) refcount.Frame {
	return refcount.Frame{Func: f.Func, File: f.File, Line: f.Line}
}

// strays reports driver processes that outlived their run: the process
// itself (running, or a zombie nobody reaped) or a member of its process
// group (what it forked, which the host kills with it).
func strays(spawned []int, settle time.Duration) []verify.Problem {
	if len(spawned) == 0 {
		return nil
	}
	groups := map[int]bool{}
	for _, pid := range spawned {
		groups[pid] = true
	}
	var left []string
	for deadline := time.Now().Add(settle); ; time.Sleep(5 * time.Millisecond) {
		left = left[:0]
		for _, st := range procStats() {
			switch {
			case groups[st.pid] && st.state == "Z":
				left = append(left, fmt.Sprintf("driver process %d is a zombie (never reaped)", st.pid))
			case groups[st.pid]:
				left = append(left, fmt.Sprintf("driver process %d is still running", st.pid))
			case groups[st.pgrp] && st.state == "Z":
				left = append(left, fmt.Sprintf("process %d (%s) of driver process %d's group is a zombie", st.pid, st.comm, st.pgrp))
			case groups[st.pgrp]:
				left = append(left, fmt.Sprintf("process %d (%s) of driver process %d's group is still running", st.pid, st.comm, st.pgrp))
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) == 0 {
		return nil
	}
	sort.Strings(left)
	return []verify.Problem{{Kind: "process", Text: strings.Join(left, "; ")}}
}

type procStat struct {
	pid, pgrp   int
	state, comm string
}

// procStats reads every process's pid, state, process group and name
// from /proc (nothing off Linux).
func procStats() []procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp …: comm may hold anything but the
		// last ')' ends it.
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 3 {
			continue
		}
		pgrp, _ := strconv.Atoi(f[2])
		out = append(out, procStat{pid: pid, pgrp: pgrp, state: f[0], comm: s[open+1 : end]})
	}
	return out
}

// ErrNoModel: no device model fits the bundle's personalities.
var ErrNoModel = errors.New("no device model fits the bundle")

// Device picks the device model for m's first personality it can model:
// a HID keyboard with the vendor and product it matches (HIDDevice; usage
// page 1, usage 6, if it matches them), the SCSI disk (SCSIDevice), the
// USB mass-storage stick (USBInterface, class 8 or unmatched).
func Device(m *bundle.Manifest) (verify.Device, error) {
	var why []string
	for _, p := range m.Personalities {
		vals := map[string]any{}
		for _, mt := range p.Match {
			if mt.Mask == 0 {
				vals[mt.Key] = mt.Value
			}
		}
		num := func(k string) (uint64, bool) { v, ok := vals[k].(uint64); return v, ok }
		switch p.ProviderClass {
		case bundle.ClassHIDDevice:
			if up, ok := num("usage_page"); ok && up != 1 {
				why = append(why, fmt.Sprintf("%s: usage page %#x (the HID model is a keyboard, page 1)", p.Label, up))
				continue
			}
			if u, ok := num("usage"); ok && u != 6 {
				why = append(why, fmt.Sprintf("%s: usage %#x (the HID model is a keyboard, usage 6)", p.Label, u))
				continue
			}
			k := &verify.HIDKeyboard{}
			if v, ok := num("vid"); ok {
				k.Vendor = uint16(v)
			}
			if v, ok := num("pid"); ok {
				k.Product = uint16(v)
			}
			return k, nil
		case bundle.ClassSCSIDevice:
			d := &verify.SCSIDisk{}
			if v, ok := vals["vendor"].(string); ok {
				d.Disk.Vendor = v
			}
			if v, ok := vals["model"].(string); ok {
				d.Disk.Model = v
			}
			return d, nil
		case bundle.ClassUSBInterface:
			if c, ok := num("class"); ok && c != 8 {
				why = append(why, fmt.Sprintf("%s: interface class %#x (the USB model is mass storage, class 8)", p.Label, c))
				continue
			}
			u := verify.USBMassStorage()
			if v, ok := num("vid"); ok {
				u.Vendor = uint16(v)
			}
			if v, ok := num("pid"); ok {
				u.Product = uint16(v)
			}
			return u, nil
		default:
			why = append(why, fmt.Sprintf("%s: provider class %s", p.Label, p.ProviderClass))
		}
	}
	return nil, fmt.Errorf("%w %s (%s): give one with --device or verify.Options.Device", ErrNoModel, m.Name, strings.Join(why, "; "))
}

// Call picks what applications call: the device model's own method if the
// manifest declares it, else the first method that takes no input (or has
// no input limit), called with none.
func Call(m *bundle.Manifest, dev verify.Device) *verify.Call {
	if dev != nil {
		c := dev.Call()
		for _, mt := range m.Methods {
			if mt.Name == c.Method && (mt.MaxInput == 0 || len(c.Input) <= mt.MaxInput) {
				return &c
			}
		}
	}
	for _, mt := range m.Methods {
		if mt.MaxInput == 0 {
			return &verify.Call{Method: mt.Name}
		}
	}
	if len(m.Methods) > 0 {
		return &verify.Call{Method: m.Methods[0].Name}
	}
	return &verify.Call{} // no methods: applications open and wait
}

// Options completes base for verifying m: Host (a new Host), and, where
// base leaves them unset, the device model (Device) and the call (Call).
func Options(m *bundle.Manifest, base verify.Options) (verify.Options, error) {
	o := base
	if o.Host == nil {
		o.Host = New(m, nil)
	}
	if o.Device == nil {
		d, err := Device(m)
		if err != nil {
			return o, err
		}
		o.Device = d
	}
	if o.Call == nil {
		o.Call = Call(m, o.Device)
	}
	return o, nil
}
