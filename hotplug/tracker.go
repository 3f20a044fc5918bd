package hotplug

import (
	"os"
	"path/filepath"
)

// Tracker keeps the set of devices a consumer has been told about — the
// devices of some sysfs classes, as reported by add and remove events —
// and, after events were lost, works out the events that make that set
// agree with sysfs again: the resync the netlink source runs after ENOBUFS.
// A device re-created at the same path meanwhile is told apart by the
// inode of its sysfs directory, which kernfs never reuses at once.
//
// A Tracker is for one goroutine.
type Tracker struct {
	root    string
	classes []Class
	tracked map[string]bool   // subsystems of classes
	known   map[string]device // by DEVPATH
}

// NewTracker returns a tracker of the devices of classes under the sysfs
// root (DefaultSysfsRoot if ""). It knows no device yet: call Walk or
// Track.
func NewTracker(root string, classes []Class) *Tracker {
	if root == "" {
		root = DefaultSysfsRoot
	}
	t := &Tracker{root: root, classes: classes, tracked: map[string]bool{}, known: map[string]device{}}
	for _, c := range classes {
		t.tracked[c.Subsystem] = true
	}
	return t
}

// Walk enumerates the devices present now, records them as reported and
// returns their add events (with origin), parents first: a coldplug.
func (t *Tracker) Walk(origin Origin) ([]Event, error) {
	devs, err := walk(t.root, t.classes, origin)
	if err != nil {
		return nil, err
	}
	out := make([]Event, len(devs))
	for i, d := range devs {
		t.known[d.DevPath] = d
		out[i] = d.Event
	}
	return out, nil
}

// Track records an event delivered to the consumer.
func (t *Tracker) Track(ev *Event) {
	if !t.tracked[ev.Subsystem] {
		return
	}
	switch ev.Action {
	case ActionAdd:
		// The inode tells this incarnation from a later one at the same
		// path; if the device is already gone it stays unknown (0).
		var ino uint64
		if fi, err := os.Stat(filepath.Join(t.root, ev.DevPath)); err == nil {
			ino = inode(fi)
		}
		t.known[ev.DevPath] = device{Event: *ev, ino: ino}
	case ActionRemove:
		delete(t.known, ev.DevPath)
	}
}

// Len returns the number of devices the consumer was told about and not
// told were removed.
func (t *Tracker) Len() int { return len(t.known) }

// Resync walks sysfs and returns the events that turn what the consumer
// was told into what is there (recording them as reported): removes first,
// children before parents, with the environment the device's add had; then
// adds, parents first (Origin OriginResync). A device present in both with
// another identity or another sysfs inode was replaced while events were
// lost: it is removed and added again.
func (t *Tracker) Resync() ([]Event, error) {
	cur, err := walk(t.root, t.classes, OriginResync)
	if err != nil {
		return nil, err
	}
	fix := diff(t.known, cur, OriginResync)
	for i := range fix {
		t.Track(&fix[i])
	}
	return fix, nil
}
