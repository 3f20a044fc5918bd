package sim

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/drvkit/drvkit/hotplug"
)

// mirror keeps simulated devices in a directory tree shaped like sysfs.
type mirror struct {
	root  string
	dirs  map[string]string // subsystem → its bus or class directory, relative to root
	grave int
}

func newMirror(root string, buses []hotplug.Bus) *mirror {
	f := &mirror{root: root, dirs: map[string]string{}}
	for _, c := range hotplug.ClassesOf(buses...) {
		f.dirs[c.Subsystem] = c.Dir
	}
	return f
}

// entry returns the bus or class link of a device and the directory its
// subsystem link points to (bus/usb for bus/usb/devices/X, class/hidraw
// for class/hidraw/X).
func (f *mirror) entry(ev *hotplug.Event) (link, subsys string) {
	dir, ok := f.dirs[ev.Subsystem]
	if !ok {
		dir = filepath.Join("class", ev.Subsystem)
	}
	sub := strings.TrimSuffix(dir, "/devices")
	return filepath.Join(f.root, dir, ev.Name()), filepath.Join(f.root, sub)
}

func ueventFile(ev *hotplug.Event) []byte {
	var b strings.Builder
	for k, v := range ev.Env() {
		switch k {
		case "ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM", "SDEV_UA":
			continue
		}
		b.WriteString(k + "=" + v + "\n")
	}
	return []byte(b.String())
}

func (f *mirror) apply(se simEvent) error {
	ev := &se.ev
	dir := filepath.Join(f.root, ev.DevPath)
	link, sub := f.entry(ev)
	wrap := func(err error) error {
		if err == nil {
			return nil
		}
		return &hotplug.OpError{Op: "sim sysfs", Path: dir, Err: err}
	}
	switch ev.Action {
	case hotplug.ActionAdd:
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return wrap(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "uevent"), ueventFile(ev), 0o644); err != nil {
			return wrap(err)
		}
		keys := make([]string, 0, len(se.attrs))
		for k := range se.attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := os.WriteFile(filepath.Join(dir, k), []byte(se.attrs[k]+"\n"), 0o644); err != nil {
				return wrap(err)
			}
		}
		for k, v := range se.raw { // binary attributes: no newline
			if err := os.WriteFile(filepath.Join(dir, k), v, 0o444); err != nil {
				return wrap(err)
			}
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return wrap(err)
		}
		for l, target := range map[string]string{filepath.Join(dir, "subsystem"): sub, link: dir} {
			rel, err := filepath.Rel(filepath.Dir(l), target)
			if err != nil {
				return wrap(err)
			}
			os.Remove(l)
			if err := os.Symlink(rel, l); err != nil {
				return wrap(err)
			}
		}
	case hotplug.ActionBind:
		return wrap(os.WriteFile(filepath.Join(dir, "uevent"), ueventFile(ev), 0o644))
	case hotplug.ActionUnbind:
		old, err := os.ReadFile(filepath.Join(dir, "uevent"))
		if err != nil {
			return wrap(err)
		}
		var kept []string
		for _, l := range strings.Split(strings.TrimSuffix(string(old), "\n"), "\n") {
			if !strings.HasPrefix(l, "DRIVER=") {
				kept = append(kept, l)
			}
		}
		return wrap(os.WriteFile(filepath.Join(dir, "uevent"), []byte(strings.Join(kept, "\n")+"\n"), 0o644))
	case hotplug.ActionRemove:
		if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return wrap(err)
		}
		// Buried, not deleted: the directory keeps its inode, so a device
		// re-created at the same path gets another one, as with kernfs
		// (ext4 would hand the freed inode number straight back).
		f.grave++
		grave := filepath.Join(f.root, ".removed", strconv.Itoa(f.grave))
		if err := os.MkdirAll(filepath.Dir(grave), 0o755); err != nil {
			return wrap(err)
		}
		if err := os.Rename(dir, grave); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return wrap(err)
		}
		return nil
	}
	return nil
}
