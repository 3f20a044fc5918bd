// Package ancestry learns which goroutine started which, from
// runtime.Stack, so that refcount/leaktest can attribute objects to the test
// whose goroutine (or a goroutine it started) created them.
package ancestry

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

var stackBufs = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}

// wanted counts the leak checks in progress. Learning a goroutine's origin
// costs a runtime.Stack — a quarter of a hotplug event's CPU — and only a
// leak check reads it, so a daemon (which runs none) never pays.
var wanted atomic.Int32

// Want says a leak check needs objects' origins until done is called.
func Want() (done func()) {
	wanted.Add(1)
	var once sync.Once
	return func() { once.Do(func() { wanted.Add(-1) }) }
}

// Wanted reports whether an object's origin can matter now: a leak check
// is in progress or some goroutine carries a label (Bind).
func Wanted() bool { return wanted.Load() > 0 || nLabels.Load() > 0 }

// Origin returns the current goroutine's id and the id of the
// goroutine that started it, parsed from runtime.Stack: its first line is
// "goroutine N [...]:" and, since Go 1.21, its last frame line reads
// "created by F in goroutine M". Only traced Init pays for it.
func Origin() (id, parent uint64) {
	bp := stackBufs.Get().(*[]byte)
	defer stackBufs.Put(bp)
	for {
		n := runtime.Stack(*bp, false)
		if n < len(*bp) {
			return parseOrigin((*bp)[:n])
		}
		if len(*bp) >= 1<<20 {
			id, _ = parseOrigin((*bp)[:n])
			return id, 0 // the tail with "created by" did not fit
		}
		*bp = make([]byte, 2*len(*bp))
	}
}

// Parse reads a goroutine's id and its parent's id from one goroutine's
// runtime.Stack text (0 for what it lacks).
func Parse(b []byte) (id, parent uint64) { return parseOrigin(b) }

func parseOrigin(b []byte) (id, parent uint64) {
	id = goidOf(b)
	if i := bytes.LastIndex(b, []byte("\ncreated by ")); i >= 0 {
		line := b[i+1:]
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		if k := bytes.LastIndex(line, []byte(" in goroutine ")); k >= 0 {
			parent, _ = strconv.ParseUint(string(line[k+len(" in goroutine "):]), 10, 64)
		}
	}
	return id, parent
}

func goidOf(b []byte) uint64 {
	var ok bool
	if b, ok = bytes.CutPrefix(b, []byte("goroutine ")); !ok {
		return 0
	}
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return 0
	}
	id, _ := strconv.ParseUint(string(b[:i]), 10, 64)
	return id
}

// Current returns the id of the calling goroutine and of the one
// that started it (0 when it is the main goroutine).
func Current() (id, parent uint64) {
	id, parent = Origin()
	Note(id, parent)
	return id, parent
}

// The ancestry learned so far: goroutine id -> the goroutine that started
// it. Goroutine ids are never reused, so an entry never goes stale; the map
// is bounded by forgetting everything when it grows past maxAncestry (the
// cost is a fallback to time windows in leaktest, never a wrong answer).
const maxAncestry = 1 << 18

var (
	ancestryMu sync.Mutex
	ancestry   = map[uint64]uint64{}
)

func Note(id, parent uint64) {
	if id == 0 || parent == 0 {
		return
	}
	ancestryMu.Lock()
	if len(ancestry) >= maxAncestry {
		clear(ancestry)
	}
	ancestry[id] = parent
	ancestryMu.Unlock()
}

// LearnAll records the ancestry of every live goroutine (one
// runtime.Stack of all goroutines: a stop-the-world, so only on demand).
func LearnAll() {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		id, parent := parseOrigin(g)
		Note(id, parent)
	}
}

// DescendsFrom reports whether goroutine g is root or was started, directly
// or through other goroutines, by root, as far as the recorded ancestry
// knows. known is false when the chain broke at a goroutine whose parent
// was never learned: call LearnAll (once) and ask again.
func DescendsFrom(g, root uint64) (descends, known bool) {
	ancestryMu.Lock()
	defer ancestryMu.Unlock()
	cur := g
	for steps := 0; cur != root && steps < 1<<16; steps++ {
		p, ok := ancestry[cur]
		if !ok {
			break
		}
		cur = p
	}
	switch {
	case cur == root:
		return true, true
	case cur == 1:
		return false, true // reached the main goroutine
	}
	return false, false
}

// Labels bound to goroutines (refcount.Do): a traced object created on a
// labelled goroutine, or on one it started, carries the label.
var (
	labelsMu sync.Mutex
	labels   = map[uint64]string{}
	nLabels  atomic.Int32 // len(labels), read without the lock
)

// Bind labels goroutine g until the returned function runs, which
// restores g's previous label.
func Bind(g uint64, label string) (restore func()) {
	labelsMu.Lock()
	prev, had := labels[g]
	labels[g] = label
	nLabels.Store(int32(len(labels)))
	labelsMu.Unlock()
	return func() {
		labelsMu.Lock()
		if had {
			labels[g] = prev
		} else {
			delete(labels, g)
		}
		nLabels.Store(int32(len(labels)))
		labelsMu.Unlock()
	}
}

// LabelOf returns the label bound to g or, failing that, to the nearest
// goroutine that started g (directly or not) and is still labelled; "" when
// none is. It costs nothing while no goroutine is labelled.
func LabelOf(g uint64) string {
	if nLabels.Load() == 0 || g == 0 {
		return ""
	}
	// Collect the chain first: ancestryMu and labelsMu are never held
	// together.
	chain := []uint64{g}
	ancestryMu.Lock()
	for cur := g; len(chain) < 64; {
		p, ok := ancestry[cur]
		if !ok || p == 0 {
			break
		}
		chain = append(chain, p)
		cur = p
	}
	ancestryMu.Unlock()
	labelsMu.Lock()
	defer labelsMu.Unlock()
	for _, id := range chain {
		if l, ok := labels[id]; ok {
			return l
		}
	}
	return ""
}
