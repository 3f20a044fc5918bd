package verify

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// openFDs maps each open descriptor of the process to what it refers to.
func openFDs() map[string]string {
	out := map[string]string{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return out
	}
	for _, e := range ents {
		t, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		out[e.Name()] = t
	}
	return out
}

// childPIDs lists the process's live children (every thread's, since a
// child belongs to the thread that forked it).
func childPIDs() map[int]bool {
	out := map[int]bool{}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return out
	}
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", t.Name(), "children"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out[n] = true
			}
		}
	}
	return out
}

func removeAll(dir string) error { return os.RemoveAll(dir) }
