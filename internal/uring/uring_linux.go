package uring

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// From <linux/io_uring.h>.
const (
	sysSetup = 425
	sysEnter = 426

	offSQRing = 0
	offSQEs   = 0x10000000

	featSingleMmap = 1 << 0
	featNoDrop     = 1 << 1

	enterGetEvents = 1 << 0

	opSend = 26

	// SUBMIT_ALL: one bad send does not stop the others' submission
	// (5.18); COOP_TASKRUN: no interrupt to run completions the ring's
	// own task reaps anyway (5.19).
	setupSubmitAll   = 1 << 7
	setupCoopTaskrun = 1 << 8

	msgDontwait = 0x40
	msgNosignal = 0x4000
)

type sqOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type cqOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type params struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  sqOffsets
	CQOff                                                                  cqOffsets
}

// sqe is struct io_uring_sqe as a send uses it.
type sqe struct {
	Opcode   uint8
	Flags    uint8
	Ioprio   uint16
	Fd       int32
	Off      uint64
	Addr     uint64
	Len      uint32
	MsgFlags uint32
	UserData uint64
	_        [24]byte
}

type cqe struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// Ring is one submission queue and its completion queue. It is not safe
// for concurrent use: one goroutine queues and flushes at a time.
type Ring struct {
	fd      int
	ringMem []byte
	sqeMem  []byte

	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        []uint32
	sqes           []sqe
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []cqe

	tail   uint32   // the next slot to fill
	first  uint32   // the first slot the next Flush submits
	user   []uint64 // the caller's value per slot
	bufs   [][]byte // what each slot sends: kept reachable until it completed
	done   []bool   // per slot: completed (during a Flush)
	broken error    // set once the ring cannot be trusted: no more sends
}

// New makes a ring of at least entries sends (a power of two).
func New(entries int) (*Ring, error) {
	var p params
	p.Flags = setupSubmitAll | setupCoopTaskrun
	fd, _, errno := syscall.Syscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		switch errno {
		case syscall.ENOSYS, syscall.EPERM, syscall.EINVAL, syscall.EACCES:
			// Missing, disabled (kernel.io_uring_disabled, seccomp) or
			// too old for the flags.
			return nil, &OpError{Op: "setup", Err: fmt.Errorf("%w: %w", ErrNotSupported, errno)}
		}
		return nil, &OpError{Op: "setup", Err: errno}
	}
	r := &Ring{fd: int(fd)}
	if p.Features&(featSingleMmap|featNoDrop) != featSingleMmap|featNoDrop {
		syscall.Close(r.fd)
		return nil, &OpError{Op: "setup", Err: fmt.Errorf("%w: kernel too old", ErrNotSupported)}
	}
	size := max(p.SQOff.Array+p.SQEntries*4, p.CQOff.Cqes+p.CQEntries*uint32(unsafe.Sizeof(cqe{})))
	mem, err := syscall.Mmap(r.fd, offSQRing, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		syscall.Close(r.fd)
		return nil, &OpError{Op: "mmap", Err: err}
	}
	sm, err := syscall.Mmap(r.fd, offSQEs, int(p.SQEntries)*int(unsafe.Sizeof(sqe{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		syscall.Munmap(mem)
		syscall.Close(r.fd)
		return nil, &OpError{Op: "mmap", Err: err}
	}
	r.ringMem, r.sqeMem = mem, sm
	base := unsafe.Pointer(&mem[0])
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqHead, r.sqTail, r.sqMask = at(p.SQOff.Head), at(p.SQOff.Tail), *at(p.SQOff.RingMask)
	r.sqArray = unsafe.Slice(at(p.SQOff.Array), p.SQEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&sm[0])), p.SQEntries)
	r.cqHead, r.cqTail, r.cqMask = at(p.CQOff.Head), at(p.CQOff.Tail), *at(p.CQOff.RingMask)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Add(base, p.CQOff.Cqes)), p.CQEntries)
	r.tail = atomic.LoadUint32(r.sqTail)
	r.first = r.tail
	r.user = make([]uint64, p.SQEntries)
	r.bufs = make([][]byte, p.SQEntries)
	r.done = make([]bool, p.SQEntries)
	return r, nil
}

// Send queues a non-blocking send of b, which must stay untouched until
// Flush returns, on the socket fd. It reports false, queueing nothing,
// when the ring is full (Flush first) or broken.
func (r *Ring) Send(fd int, b []byte, user uint64) bool {
	if r.broken != nil || r.tail-r.first > r.sqMask || len(b) == 0 {
		return false
	}
	i := r.tail & r.sqMask
	r.sqes[i] = sqe{
		Opcode:   opSend,
		Fd:       int32(fd),
		Addr:     uint64(uintptr(unsafe.Pointer(&b[0]))),
		Len:      uint32(len(b)),
		MsgFlags: msgDontwait | msgNosignal,
		UserData: uint64(i),
	}
	r.sqArray[i] = i
	r.user[i], r.bufs[i] = user, b
	r.done[i] = false
	r.tail++
	return true
}

// Flush submits the queued sends and returns once every one of them has
// completed, calling done for each, in completion order, with the bytes
// it wrote or why it wrote none (EAGAIN: the socket was full). If the
// ring fails, the sends it did not run complete with ErrNotSent and it
// refuses any more; Flush then returns the failure.
func (r *Ring) Flush(done func(user uint64, n int, err error)) error {
	queued := r.tail - r.first
	if queued == 0 {
		return r.broken
	}
	atomic.StoreUint32(r.sqTail, r.tail)
	start := r.first
	r.first = r.tail
	var completed uint32
	reap := func() {
		head, tail := atomic.LoadUint32(r.cqHead), atomic.LoadUint32(r.cqTail)
		for ; head != tail; head++ {
			c := r.cqes[head&r.cqMask]
			i := uint32(c.UserData) & r.sqMask
			r.done[i], r.bufs[i] = true, nil
			completed++
			if c.Res < 0 {
				done(r.user[i], 0, syscall.Errno(-c.Res))
			} else {
				done(r.user[i], int(c.Res), nil)
			}
		}
		atomic.StoreUint32(r.cqHead, head)
	}
	var err error
	for busy := 0; completed < queued; {
		submitted := atomic.LoadUint32(r.sqHead) - start
		toSubmit, wait := queued-submitted, uint32(0)
		if toSubmit == 0 {
			// All submitted: wait for what did not complete inline.
			wait = queued - completed
		}
		_, _, errno := syscall.Syscall6(sysEnter, uintptr(r.fd), uintptr(toSubmit), uintptr(wait), enterGetEvents, 0, 0)
		reap()
		switch errno {
		case 0, syscall.EINTR:
			continue
		case syscall.EAGAIN, syscall.EBUSY:
			// Short of memory or completions: let the readers run.
			if busy++; busy < 1000 {
				runtime.Gosched()
				continue
			}
		}
		err = &OpError{Op: "enter", Err: errno}
		break
	}
	if err == nil {
		return nil
	}
	// The ring cannot be trusted any more, and is never entered again:
	// what it did not take is reported not sent, what it took and did
	// not complete, failed.
	r.broken = err
	submitted := atomic.LoadUint32(r.sqHead) - start
	for k := start; k != r.tail; k++ {
		i := k & r.sqMask
		if !r.done[i] {
			r.done[i], r.bufs[i] = true, nil
			if k-start < submitted {
				done(r.user[i], 0, err)
			} else {
				done(r.user[i], 0, ErrNotSent)
			}
		}
	}
	return err
}

// Err reports why r refuses sends (it broke, or is closed); nil while it
// takes them.
func (r *Ring) Err() error { return r.broken }

// Break makes r refuse sends and Flush report err, as a ring whose
// io_uring_enter failed does: for tests of a caller's fallback.
func (r *Ring) Break(err error) {
	if r.broken == nil {
		r.broken = err
	}
}

var errClosed = errors.New("ring closed")

// Close releases the ring; it refuses sends from then on.
func (r *Ring) Close() error {
	if r.fd < 0 {
		return nil
	}
	err := errors.Join(syscall.Munmap(r.sqeMem), syscall.Munmap(r.ringMem), syscall.Close(r.fd))
	r.fd = -1
	r.broken = errClosed
	if err != nil {
		return &OpError{Op: "close", Err: err}
	}
	return nil
}
