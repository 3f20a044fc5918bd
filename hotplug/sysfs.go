package hotplug

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Class is a sysfs directory whose entries are devices of one subsystem:
// the bus and class directories coldplug and resync enumerate.
type Class struct {
	Dir       string // relative to the sysfs root, e.g. "bus/usb/devices"
	Subsystem string // the SUBSYSTEM its devices report, e.g. "usb"
}

// The classes of the devices drvkit publishes come from their buses
// (Bus.Classes, ClassesOf). ClassBlock is there for callers that want disks
// (and the real-kernel tests, which use loop devices because this machine
// has no USB or SCSI hardware).
var (
	ClassBlock        = Class{Dir: "class/block", Subsystem: "block"}
	DefaultSysfsRoot  = "/sys"
	errNotUnderSysfs  = errors.New("device directory is not under the sysfs root")
	errNoUeventFile   = errors.New("no uevent file")
	errBadUeventEntry = errors.New("uevent file line is not KEY=VALUE")
	// ErrNoClasses is returned by a walk given no classes (nil): the
	// caller forgot to say which devices to look for.
	ErrNoClasses = errors.New("no sysfs classes to walk (see hotplug.ClassesOf)")
)

// Walk enumerates the devices of classes under the sysfs root and returns
// one add event per device (Origin = origin, Seqnum 0), parents before
// children. Each event carries what the kernel would send for the device
// now: the contents of its uevent file (including DRIVER when bound).
// A device that disappears during the walk is skipped; any other failure
// returns an *OpError.
func Walk(root string, classes []Class, origin Origin) ([]Event, error) {
	devs, err := walk(root, classes, origin)
	if err != nil {
		return nil, err
	}
	out := make([]Event, len(devs))
	for i := range devs {
		out[i] = devs[i].Event
	}
	return out, nil
}

// device is a device as reported to the consumer, with the inode of its
// sysfs directory when known (0 otherwise). sysfs (kernfs) numbers its
// nodes uniquely, so a device removed and re-created at the same path —
// with an identical uevent environment, as a SCSI LUN re-added at the same
// H:C:T:L — still shows as another device.
type device struct {
	Event
	ino uint64
}

func walk(root string, classes []Class, origin Origin) ([]device, error) {
	if classes == nil {
		return nil, &OpError{Op: "walk", Path: root, Err: ErrNoClasses}
	}
	absRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, &OpError{Op: "walk", Path: root, Err: err}
	}
	seen := map[string]bool{}
	var out []device
	for _, c := range classes {
		dir := filepath.Join(absRoot, c.Dir)
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue // bus not present (no USB on this machine, module not loaded)
		}
		if err != nil {
			return nil, &OpError{Op: "walk", Path: dir, Err: err}
		}
		for _, ent := range ents {
			ev, err := readDevice(absRoot, filepath.Join(dir, ent.Name()), c.Subsystem, origin)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed while we looked
			}
			if err != nil {
				return nil, err
			}
			if !seen[ev.DevPath] {
				seen[ev.DevPath] = true
				out = append(out, ev)
			}
		}
	}
	sortDevices(out)
	return out, nil
}

// sortDevices orders like sortParentsFirst.
func sortDevices(devs []device) {
	slices.SortStableFunc(devs, func(a, b device) int {
		if d := strings.Count(a.DevPath, "/") - strings.Count(b.DevPath, "/"); d != 0 {
			return d
		}
		return strings.Compare(a.DevPath, b.DevPath)
	})
}

// sortParentsFirst orders by depth, so a device (a prefix of its children's
// paths) always comes before them; ties by path for determinism.
func sortParentsFirst(evs []Event) {
	slices.SortStableFunc(evs, func(a, b Event) int {
		if d := strings.Count(a.DevPath, "/") - strings.Count(b.DevPath, "/"); d != 0 {
			return d
		}
		return strings.Compare(a.DevPath, b.DevPath)
	})
}

// readDevice builds the add event of the device whose bus/class entry is
// link.
func readDevice(absRoot, link, subsystem string, origin Origin) (device, error) {
	real, err := filepath.EvalSymlinks(link)
	if err != nil {
		return device{}, &OpError{Op: "walk", Path: link, Err: err}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return device{}, &OpError{Op: "walk", Path: real, Err: err}
	}
	devpath, ok := strings.CutPrefix(real, absRoot)
	if !ok || !strings.HasPrefix(devpath, "/") {
		return device{}, &OpError{Op: "walk", Path: real, Err: errNotUnderSysfs}
	}
	if s, err := os.Readlink(filepath.Join(real, "subsystem")); err == nil {
		subsystem = filepath.Base(s)
	}
	b, err := os.ReadFile(filepath.Join(real, "uevent"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(real); serr == nil {
				err = errNoUeventFile // the device is there but malformed
			}
		}
		return device{}, &OpError{Op: "walk", Path: filepath.Join(real, "uevent"), Err: err}
	}
	var env []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if k, _, ok := strings.Cut(line, "="); !ok || k == "" {
			return device{}, &OpError{Op: "walk", Path: filepath.Join(real, "uevent"), Err: errBadUeventEntry}
		}
		env = append(env, line)
	}
	ev, err := NewEvent(ActionAdd, devpath, subsystem, 0, env...)
	if err != nil {
		return device{}, &OpError{Op: "walk", Path: real, Err: err}
	}
	ev.Origin = origin
	return device{Event: ev, ino: inode(fi)}, nil
}

// withAction returns ev as an event of another action and origin, with the
// same environment (minus SEQNUM: a synthesized event has none).
func withAction(ev Event, a Action, origin Origin) Event {
	var env []string
	for k, v := range ev.Env() {
		switch k {
		case "ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM":
			continue
		}
		env = append(env, k+"="+v)
	}
	out, err := NewEvent(a, ev.DevPath, ev.Subsystem, 0, env...)
	if err != nil {
		// ev was valid, so the rebuilt event is too.
		panic("hotplug: rebuilding a valid event failed: " + err.Error())
	}
	out.Origin = origin
	return out
}

// identity is what tells two incarnations of a device at the same path
// apart: its environment without the fields that change over its life.
func identity(ev *Event) string {
	var sb strings.Builder
	for k, v := range ev.Env() {
		switch k {
		case "ACTION", "DEVPATH", "SEQNUM", "DRIVER", "SYNTH_UUID":
			continue
		}
		if strings.HasPrefix(k, "SYNTH_ARG_") || k == "SDEV_UA" {
			continue
		}
		sb.WriteString(k)
		sb.WriteByte('=')
		sb.WriteString(v)
		sb.WriteByte(0)
	}
	return sb.String()
}

// diff returns the events that turn the reported set known into the
// current one: removes first (children before parents), then adds (parents
// first). A device present in both but with another identity or another
// sysfs inode was replaced while events were lost: it is removed and added
// again.
func diff(known map[string]device, current []device, origin Origin) []Event {
	cur := make(map[string]*device, len(current))
	for i := range current {
		cur[current[i].DevPath] = &current[i]
	}
	same := func(k, c *device) bool {
		if k.ino != 0 && c.ino != 0 && k.ino != c.ino {
			return false
		}
		return identity(&k.Event) == identity(&c.Event)
	}
	var removes, adds []Event
	for p, k := range known {
		if c, ok := cur[p]; !ok || !same(&k, c) {
			removes = append(removes, withAction(k.Event, ActionRemove, origin))
		}
	}
	for i := range current {
		c := &current[i]
		if k, ok := known[c.DevPath]; !ok || !same(&k, c) {
			ev := c.Event
			ev.Origin = origin
			adds = append(adds, ev)
		}
	}
	sortParentsFirst(removes)
	slices.Reverse(removes)
	sortParentsFirst(adds)
	return append(removes, adds...)
}
