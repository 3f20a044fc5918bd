package server

import (
	"errors"
	"log/slog"
	"sync"
	"syscall"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/internal/uring"
)

// sendBatch is one fan-out's direct notification writes, sent together
// when the driver's batch is flushed: one io_uring_enter for all of them
// where the kernel allows, a write(2) each otherwise. Each connection in
// it holds its write side, its frame in its scratch buffer, until then.
type sendBatch struct {
	srv   *Server
	conns []*conn
}

var _ driver.BatchFlusher = (*sendBatch)(nil)

// sendBatch returns the server's part of the fan-out's batch b.
func (s *Server) sendBatch(b *driver.Batch) *sendBatch {
	return b.Join(s, s.newSendBatch).(*sendBatch)
}

// makeSendBatch makes or reuses a sendBatch; Server.newSendBatch holds it
// as a func value made once (a method value made per fan-out would be an
// allocation).
func (s *Server) makeSendBatch() driver.BatchFlusher {
	if sb, ok := s.sendBatches.Get().(*sendBatch); ok {
		return sb
	}
	return &sendBatch{srv: s}
}

// ringMin is the fewest writes sent through a ring: one write is one
// system call either way, and write(2) costs less than a ring's round.
const ringMin = 2

func (sb *sendBatch) FlushBatch() {
	conns := sb.conns
	var r *uring.Ring
	if len(conns) >= ringMin {
		r = sb.srv.rings.get()
	}
	for r != nil && len(conns) > 0 {
		n, sent := 0, 0
		for _, c := range conns {
			if err := faultinject.At(faultinject.Write, nil); err != nil {
				c.wroteDirect(c.scratch, 0, err, true)
			} else if r.Send(c.wfd, c.scratch, uint64(n)) {
				sent++
			} else {
				break // the ring is full: send what it holds first
			}
			n++
		}
		if n == 0 {
			break // an empty ring refused a send: it broke, write the rest
		}
		batch := conns[:n]
		_ = r.Flush(func(i uint64, wrote int, err error) {
			c := batch[i]
			if err != nil && err != syscall.EAGAIN {
				// Nothing was written (a dead peer, a send the ring
				// did not run or this kernel refuses): write(2) says
				// what the error is, or sends it after all.
				c.writeDirect(c.scratch, true)
				return
			}
			c.wroteDirect(c.scratch, wrote, err, true)
		})
		sb.srv.fanoutRing.Add(int64(sent))
		conns = conns[n:]
	}
	if r != nil {
		sb.srv.rings.put(r)
	}
	for _, c := range conns {
		c.writeDirect(c.scratch, true)
	}
	sb.srv.fanoutWrite.Add(int64(len(conns)))
	clear(sb.conns)
	sb.conns = sb.conns[:0]
	sb.srv.sendBatches.Put(sb)
}

// ringPool holds the server's rings, made as fan-outs need them: one per
// fan-out under way, up to ringsMax; a fan-out that finds none free
// writes as before.
type ringPool struct {
	log    *slog.Logger
	mu     sync.Mutex
	free   []*uring.Ring
	made   int
	err    error // why no ring is made: set once, never retried
	closed bool
}

const (
	ringsMax    = 4
	ringEntries = 64
)

// errRingsOff is the rings' error when Config.NoIOURing turns them off.
var errRingsOff = errors.New("turned off by the configuration")

func (p *ringPool) get() *uring.Ring {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil || p.closed {
		return nil
	}
	if n := len(p.free); n > 0 {
		r := p.free[n-1]
		p.free = p.free[:n-1]
		return r
	}
	if p.made == ringsMax {
		return nil
	}
	r, err := uring.New(ringEntries)
	if err != nil {
		p.stopLocked(err)
		return nil
	}
	p.made++
	return r
}

// put gives r back, or closes it when the server is closed or r broke. A
// ring that broke (io_uring_enter refused: a seccomp filter that allows
// the setup only, say) ends the pool's use of io_uring.
func (p *ringPool) put(r *uring.Ring) {
	p.mu.Lock()
	if err := r.Err(); err != nil {
		p.stopLocked(err)
	} else if !p.closed {
		p.free = append(p.free, r)
		p.mu.Unlock()
		return
	}
	p.made--
	p.mu.Unlock()
	r.Close()
}

// stopLocked ends the pool's use of io_uring, saying why once; p.mu is
// held.
func (p *ringPool) stopLocked(err error) {
	if p.err == nil {
		p.err = err
		p.log.Info("notifications are written one write(2) each", "reason", err.Error())
	}
}

func (p *ringPool) close() {
	p.mu.Lock()
	p.closed = true
	free := p.free
	p.free = nil
	p.made -= len(free)
	p.mu.Unlock()
	for _, r := range free {
		r.Close()
	}
}
