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
			f, err := local(dir, from)
			if err != nil {
				return bad(err.Error())
			}
			t, err := local(dir, to)
			if err != nil {
				return bad(err.Error())
			}
			if err := symlink(t, f); err != nil {
				return err
			}
			if kind == "SYSDIR" {
				// bus/usb/devices/X -> subsystem bus/usb; class/block/X -> class/block
				parts := strings.Split(strings.TrimPrefix(from, "/sys/"), "/")
				if len(parts) >= 3 {
					sub := filepath.Join(dir, parts[0], parts[1])
					if err := symlink(sub, filepath.Join(t, "subsystem")); err != nil {
						return err
					}
				}
			}
		case "SYSATTR":
			p, v, ok := strings.Cut(rest, "=")
			if !ok {
				return bad("want PATH=VALUE")
			}
			f, err := local(dir, p)
			if err != nil {
				return bad(err.Error())
			}
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
				return err
			}
		case "SYSUEVENT":
			p, kv, ok := strings.Cut(rest, " ")
			if !ok || !strings.Contains(kv, "=") {
				return bad("want PATH KEY=VALUE")
			}
			f, err := local(dir, p)
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
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(d, "uevent"), []byte(strings.Join(uevents[d], "\n")+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// local maps a /sys path of the dump into dir, refusing anything that would
// escape it.
func local(dir, p string) (string, error) {
	rel, ok := strings.CutPrefix(p, "/sys/")
	if !ok {
		return "", fmt.Errorf("path %q is not under /sys", p)
	}
	clean := filepath.Clean(rel)
	if clean == ".." || strings.HasPrefix(clean, "../") || filepath.IsAbs(clean) {
		return "", fmt.Errorf("path %q escapes /sys", p)
	}
	return filepath.Join(dir, clean), nil
}

// symlink creates link -> target as a relative link, creating the parent
// directories of both.
func symlink(target, link string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(link), target)
	if err != nil {
		return err
	}
	if old, err := os.Readlink(link); err == nil && old == rel {
		return nil
	}
	return os.Symlink(rel, link)
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
