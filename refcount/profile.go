package refcount

import (
	"compress/gzip"
	"io"
	"os"
	"runtime"
	"time"
)

// WriteProfile writes the report's outstanding references as a gzipped
// pprof profile (profile.proto, encoded here by hand): one sample per
// distinct holder stack of each object, valued by its references, labelled
// with class, tag and object, so that `go tool pprof -top` shows where
// leaked references were taken. Each sample's stack starts at its blamed
// frame (Stack.Blame); the frames of drvkit inside it are dropped, the
// innermost one kept as the label retained_in.
func (r *Report) WriteProfile(w io.Writer) error {
	p := newProfileBuilder()
	for _, o := range r.objs {
		for _, h := range o.Holders() {
			for i, sc := range h.stacks {
				e := depotEntryOf(sc.id)
				if e == nil {
					continue
				}
				labels := [][2]string{{"class", o.class}, {"tag", h.Tag}, {"object", o.String()}}
				// The sample starts at the blamed frame, so that pprof's
				// flat column names the program's line, not drvkit's; the
				// innermost frame stays as a label.
				pcs, inner := blamedPCs(e.pcs)
				if inner != "" {
					labels = append(labels, [2]string{"retained_in", inner})
				}
				if h.Ambiguous {
					labels = append(labels, [2]string{"ambiguous", "true"})
				}
				p.sample(pcs, int64(h.refsAt(i)), labels)
			}
		}
	}
	zw := gzip.NewWriter(w)
	if _, err := zw.Write(p.encode()); err != nil {
		return err
	}
	return zw.Close()
}

// pbuf is a minimal protobuf writer: varints and length-delimited fields.
type pbuf struct{ b []byte }

func (p *pbuf) varint(x uint64) {
	for x >= 0x80 {
		p.b = append(p.b, byte(x)|0x80)
		x >>= 7
	}
	p.b = append(p.b, byte(x))
}

func (p *pbuf) key(field, wire int) { p.varint(uint64(field)<<3 | uint64(wire)) }

func (p *pbuf) uint(field int, x uint64) {
	if x == 0 {
		return
	}
	p.key(field, 0)
	p.varint(x)
}

func (p *pbuf) int(field int, x int64) { p.uint(field, uint64(x)) }

func (p *pbuf) bytes(field int, b []byte) {
	p.key(field, 2)
	p.varint(uint64(len(b)))
	p.b = append(p.b, b...)
}

func (p *pbuf) msg(field int, f func(*pbuf)) {
	var m pbuf
	f(&m)
	p.bytes(field, m.b)
}

func (p *pbuf) packed(field int, xs []uint64) {
	var m pbuf
	for _, x := range xs {
		m.varint(x)
	}
	p.bytes(field, m.b)
}

type pline struct {
	fn   uint64
	line int64
}

type profileBuilder struct {
	strings  []string
	strIdx   map[string]int64
	locs     map[uintptr]uint64
	locOrder []uintptr
	locLines map[uintptr][]pline
	funcs    map[[2]string]uint64
	funcList [][2]string
	samples  pbuf
}

func newProfileBuilder() *profileBuilder {
	p := &profileBuilder{strIdx: map[string]int64{}, locs: map[uintptr]uint64{}, locLines: map[uintptr][]pline{}, funcs: map[[2]string]uint64{}}
	p.str("") // string_table[0] must be ""
	return p
}

func (p *profileBuilder) str(s string) int64 {
	if i, ok := p.strIdx[s]; ok {
		return i
	}
	i := int64(len(p.strings))
	p.strings = append(p.strings, s)
	p.strIdx[s] = i
	return i
}

func (p *profileBuilder) funcID(name, file string) uint64 {
	k := [2]string{name, file}
	if id, ok := p.funcs[k]; ok {
		return id
	}
	p.str(name)
	p.str(file)
	id := uint64(len(p.funcList) + 1)
	p.funcs[k] = id
	p.funcList = append(p.funcList, k)
	return id
}

// location interns one PC, expanding inlined calls into several lines
// (innermost first, as profile.proto wants).
func (p *profileBuilder) location(pc uintptr) uint64 {
	if id, ok := p.locs[pc]; ok {
		return id
	}
	id := uint64(len(p.locOrder) + 1)
	p.locs[pc] = id
	p.locOrder = append(p.locOrder, pc)
	frames := runtime.CallersFrames([]uintptr{pc})
	var lines []pline
	for {
		f, more := frames.Next()
		if f.Function != "" {
			lines = append(lines, pline{fn: p.funcID(f.Function, f.File), line: int64(f.Line)})
		}
		if !more {
			break
		}
	}
	p.locLines[pc] = lines
	return id
}

func (p *profileBuilder) sample(pcs []uintptr, n int64, labels [][2]string) {
	locIDs := make([]uint64, 0, len(pcs))
	for _, pc := range pcs {
		locIDs = append(locIDs, p.location(pc))
	}
	p.samples.msg(2, func(s *pbuf) {
		s.packed(1, locIDs)
		s.packed(2, []uint64{uint64(n)})
		for _, l := range labels {
			k, v := p.str(l[0]), p.str(l[1])
			s.msg(3, func(lb *pbuf) {
				lb.int(1, k)
				lb.int(2, v)
			})
		}
	})
}

func (p *profileBuilder) encode() []byte {
	var out pbuf
	refs, count := p.str("references"), p.str("count")
	// sample_type
	out.msg(1, func(m *pbuf) { m.int(1, refs); m.int(2, count) })
	out.b = append(out.b, p.samples.b...)
	// one mapping for the running binary; functions are already resolved
	exe, _ := os.Executable()
	exeIdx := p.str(exe)
	out.msg(3, func(m *pbuf) {
		m.uint(1, 1)
		m.uint(3, ^uint64(0))
		m.int(5, exeIdx)
		m.uint(7, 1) // has_functions
		m.uint(8, 1) // has_filenames
		m.uint(9, 1) // has_line_numbers
		m.uint(10, 1)
	})
	for _, pc := range p.locOrder {
		id := p.locs[pc]
		lines := p.locLines[pc]
		out.msg(4, func(m *pbuf) {
			m.uint(1, id)
			m.uint(2, 1)
			m.uint(3, uint64(pc))
			for _, l := range lines {
				m.msg(4, func(lm *pbuf) { lm.uint(1, l.fn); lm.int(2, l.line) })
			}
		})
	}
	for i, f := range p.funcList {
		name, file := p.strIdx[f[0]], p.strIdx[f[1]]
		out.msg(5, func(m *pbuf) {
			m.uint(1, uint64(i+1))
			m.int(2, name)
			m.int(3, name)
			m.int(4, file)
		})
	}
	for _, s := range p.strings {
		out.bytes(6, []byte(s))
	}
	out.int(9, time.Now().UnixNano())
	out.msg(11, func(m *pbuf) { m.int(1, refs); m.int(2, count) }) // period_type
	out.int(12, 1)
	return out.b
}

// blamedPCs trims pcs to start at the blamed frame. It returns the trimmed
// PCs and the innermost frame dropped ("" when none was).
func blamedPCs(pcs []uintptr) ([]uintptr, string) {
	isFw := frameworkFunc()
	var inner string
	for i, pc := range pcs {
		frames := runtime.CallersFrames([]uintptr{pc})
		user := false
		for {
			f, more := frames.Next()
			fr := Frame{Func: f.Function, File: f.File, Line: f.Line}
			if inner == "" {
				inner = fr.Short()
			}
			if (f.Function != "" || f.File != "") && !isFw(fr) {
				user = true
				break
			}
			if !more {
				break
			}
		}
		if user {
			if i == 0 {
				return pcs, ""
			}
			return pcs[i:], inner
		}
	}
	return pcs, "" // all framework: keep the whole stack
}
