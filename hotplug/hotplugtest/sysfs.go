package hotplugtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// BuildSysfs materializes, under dir, the sysfs described by a dump in the
// format of drvkit's QEMU capture (testdata/sysfs/qemu-sysfs.txt):
//
//	SYSDIR /sys/bus/usb/devices/2-1 -> /sys/devices/.../2-1   bus/class entry (symlink)
//	SYSATTR /sys/devices/.../2-1/serial=PROBE123               attribute file
//	SYSLINK /sys/devices/.../2-1/driver -> /sys/bus/usb/drivers/usb
//	SYSUEVENT /sys/devices/.../2-1 DEVTYPE=usb_device          one line of its uevent file
//
// Paths in the dump start with /sys, which is replaced by dir. Every device
// listed by a SYSDIR line also gets a subsystem link to its bus or class,
// as in the real sysfs. Lines starting with '#' and blank lines are ignored.
func BuildSysfs(dir string, dump io.Reader) error {
	// Every file operation goes through root, so that no link the dump
	// creates can lead a later line's write outside dir.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	sc := bufio.NewScanner(dump)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	uevents := map[string][]string{}
	var order []string
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kind, rest, _ := strings.Cut(line, " ")
		bad := func(why string) error { return fmt.Errorf("sysfs dump line %d: %s: %q", n, why, line) }
		switch kind {
		case "SYSDIR", "SYSLINK":
			from, to, ok := strings.Cut(rest, " -> ")
			if !ok {
				return bad("want PATH -> TARGET")
			}
			f, err := local(from)
			if err != nil {
				return bad(err.Error())
			}
			t, err := local(to)
			if err != nil {
				return bad(err.Error())
			}
			if err := symlink(root, t, f); err != nil {
				return bad(err.Error())
			}
			if kind == "SYSDIR" {
				// bus/usb/devices/X -> subsystem bus/usb; class/block/X -> class/block
				parts := strings.Split(strings.TrimPrefix(from, "/sys/"), "/")
				if len(parts) >= 3 {
					sub := filepath.Join(parts[0], parts[1])
					if err := symlink(root, sub, filepath.Join(t, "subsystem")); err != nil {
						return bad(err.Error())
					}
				}
			}
		case "SYSATTR":
			p, v, ok := strings.Cut(rest, "=")
			if !ok {
				return bad("want PATH=VALUE")
			}
			f, err := local(p)
			if err != nil {
				return bad(err.Error())
			}
			if err := root.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				return bad(err.Error())
			}
			if err := root.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
				return bad(err.Error())
			}
		case "SYSUEVENT":
			p, kv, ok := strings.Cut(rest, " ")
			if !ok || !strings.Contains(kv, "=") {
				return bad("want PATH KEY=VALUE")
			}
			f, err := local(p)
			if err != nil {
				return bad(err.Error())
			}
			if _, ok := uevents[f]; !ok {
				order = append(order, f)
			}
			uevents[f] = append(uevents[f], kv)
		default:
			return bad("unknown line kind")
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, d := range order {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := root.WriteFile(filepath.Join(d, "uevent"), []byte(strings.Join(uevents[d], "\n")+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// local maps a /sys path of the dump to a path relative to the tree's
// root, refusing anything that would escape it.
func local(p string) (string, error) {
	rel, ok := strings.CutPrefix(p, "/sys/")
	if !ok {
		return "", fmt.Errorf("path %q is not under /sys", p)
	}
	clean := filepath.Clean(rel)
	if clean == ".." || strings.HasPrefix(clean, "../") || filepath.IsAbs(clean) {
		return "", fmt.Errorf("path %q escapes /sys", p)
	}
	return clean, nil
}

// symlink creates link -> target (both relative to root) as a relative
// link, creating the parent directories of both.
func symlink(root *os.Root, target, link string) error {
	if err := root.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if err := root.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(link), target)
	if err != nil {
		return err
	}
	if old, err := root.Readlink(link); err == nil && old == rel {
		return nil
	}
	return root.Symlink(rel, link)
}

// QEMUSysfs builds the QEMU guest's sysfs from the dump at path into a new
// temporary directory of t and returns it.
func QEMUSysfs(t interface {
	Helper()
	TempDir() string
	Fatalf(string, ...any)
}, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open sysfs dump: %v", err)
	}
	defer f.Close()
	dir := t.TempDir()
	if err := BuildSysfs(dir, f); err != nil {
		t.Fatalf("build fake sysfs: %v", err)
	}
	return dir
}
