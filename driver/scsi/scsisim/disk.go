package scsisim

import (
	"encoding/binary"
	"sync"

	"github.com/drvkit/drvkit/driver/scsi"
)

const chunkSize = 64 << 10

// Disk is an in-memory SCSI disk. It is safe for concurrent use.
type Disk struct {
	mu        sync.Mutex
	blockSize uint32
	blocks    uint64
	chunks    map[uint64]*[chunkSize]byte // allocated at the first write to them
	base      []byte                      // what the disk holds from offset 0 where never written
	inq       scsi.InquiryData
	notReady  bool
	ua        []byte // pending unit attention sense
	pending   []byte // sense kept for REQUEST SENSE (no autosense on BOT)
	faults    []fault
	counts    map[byte]int
	readOnly  bool
}

type fault struct {
	op    int // opcode, or -1 for any
	sense []byte
}

// Option configures a Disk.
type Option func(*Disk)

// WithInquiry sets the identification strings and peripheral type.
func WithInquiry(vendor, product, revision string, typ scsi.PeripheralType) Option {
	return func(d *Disk) {
		d.inq.Vendor, d.inq.Product, d.inq.Revision, d.inq.Type = vendor, product, revision, typ
	}
}

// WithContents makes the disk start with p at offset 0 (a label, a
// partition table) without storing it: memory is spent on a chunk only
// when it is written, so a simulator can hold many labelled disks for the
// price of their descriptions.
func WithContents(p []byte) Option {
	return func(d *Disk) { d.base = p }
}

// ReadOnly makes WRITE fail with DATA PROTECT / write protected.
func ReadOnly() Option { return func(d *Disk) { d.readOnly = true } }

// NewDisk returns a disk of blocks logical blocks of blockSize bytes.
func NewDisk(blocks uint64, blockSize uint32, opts ...Option) *Disk {
	d := &Disk{
		blockSize: blockSize,
		blocks:    blocks,
		chunks:    make(map[uint64]*[chunkSize]byte),
		inq:       scsi.InquiryData{Vendor: "DRVKIT", Product: "MEMDISK", Revision: "1.0", Type: scsi.TypeDisk},
		counts:    make(map[byte]int),
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

// BlockSize returns the logical block size.
func (d *Disk) BlockSize() uint32 { return d.blockSize }

// Blocks returns the number of logical blocks.
func (d *Disk) Blocks() uint64 { return d.blocks }

// FailNext makes the next command with opcode op (or any command if op is
// negative) end in CHECK CONDITION with the given sense.
func (d *Disk) FailNext(op int, key scsi.SenseKey, asc, ascq uint8) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults = append(d.faults, fault{op: op, sense: scsi.FixedSense(key, asc, ascq)})
}

// SetReady makes media-access commands fail with NOT READY / medium not
// present while ready is false.
func (d *Disk) SetReady(ready bool) {
	d.mu.Lock()
	d.notReady = !ready
	d.mu.Unlock()
}

// RaiseUnitAttention makes the next command (other than INQUIRY and
// REQUEST SENSE) report UNIT ATTENTION with asc/ascq, as after a reset.
func (d *Disk) RaiseUnitAttention(asc, ascq uint8) {
	d.mu.Lock()
	d.ua = scsi.FixedSense(scsi.SenseUnitAttention, asc, ascq)
	d.mu.Unlock()
}

// Count returns how many commands with opcode op the disk has executed.
func (d *Disk) Count(op byte) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counts[op]
}

// Written reports whether anything was written to the disk (so it holds
// data that a new disk with the same options would not).
func (d *Disk) Written() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.chunks) > 0
}

// ReadAt copies disk contents at byte offset off into p (for assertions).
func (d *Disk) ReadAt(p []byte, off int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.copyOut(p, uint64(off))
}

// Status values returned by Execute (SAM-5 status codes).
const (
	statusGood  = uint8(scsi.StatusGood)
	statusCheck = uint8(scsi.StatusCheckCondition)
)

// Execute runs one command. dataOut is the data the initiator sent; dataIn
// is the buffer for data to the initiator, and n is how many bytes of it
// were filled (for data-out commands, how many bytes were consumed). On
// CHECK CONDITION, sense holds fixed-format sense data, which is also kept
// for a following REQUEST SENSE.
func (d *Disk) Execute(cdb, dataOut, dataIn []byte) (n int, status uint8, sense []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(cdb) == 0 {
		return d.check(scsi.SenseIllegalRequest, 0x20, 0x00)
	}
	op := cdb[0]
	d.counts[op]++
	if op == scsi.OpRequestSense {
		s := d.pending
		d.pending = nil
		if s == nil {
			s = scsi.FixedSense(scsi.SenseNoSense, 0, 0)
		}
		alloc := 252
		if len(cdb) >= 5 {
			alloc = int(cdb[4])
		}
		return copy(dataIn[:min(alloc, len(dataIn))], s), statusGood, nil
	}
	if d.ua != nil && op != scsi.OpInquiry {
		s := d.ua
		d.ua = nil
		d.pending = s
		return 0, statusCheck, s
	}
	for i, f := range d.faults {
		if f.op < 0 || f.op == int(op) {
			d.faults = append(d.faults[:i], d.faults[i+1:]...)
			d.pending = f.sense
			return 0, statusCheck, f.sense
		}
	}
	d.pending = nil
	if d.notReady && op != scsi.OpInquiry {
		return d.check(scsi.SenseNotReady, 0x3a, 0x00)
	}
	if len(cdb) < scsi.CDBLen(op) {
		return d.check(scsi.SenseIllegalRequest, 0x24, 0x00)
	}
	switch op {
	case scsi.OpTestUnitReady, scsi.OpSynchronizeCache:
		return 0, statusGood, nil
	case scsi.OpInquiry:
		if cdb[1]&1 != 0 {
			return d.check(scsi.SenseIllegalRequest, 0x24, 0x00) // no VPD pages
		}
		b := make([]byte, scsi.InquiryLen)
		b[0] = byte(d.inq.Type)
		b[2] = 0x06 // SPC-4
		b[3] = 0x02 // response data format 2
		b[4] = scsi.InquiryLen - 5
		pad(b[8:16], d.inq.Vendor)
		pad(b[16:32], d.inq.Product)
		pad(b[32:36], d.inq.Revision)
		alloc := int(binary.BigEndian.Uint16(cdb[3:5]))
		return copy(dataIn[:min(alloc, len(dataIn))], b), statusGood, nil
	case scsi.OpReadCapacity10:
		var b [8]byte
		binary.BigEndian.PutUint32(b[0:], uint32(min(d.blocks-1, scsi.MaxLBA10)))
		binary.BigEndian.PutUint32(b[4:], d.blockSize)
		return copy(dataIn, b[:]), statusGood, nil
	case scsi.OpServiceAction16:
		if cdb[1]&0x1f != scsi.SAReadCapacity16 {
			return d.check(scsi.SenseIllegalRequest, 0x24, 0x00)
		}
		var b [32]byte
		binary.BigEndian.PutUint64(b[0:], d.blocks-1)
		binary.BigEndian.PutUint32(b[8:], d.blockSize)
		alloc := int(binary.BigEndian.Uint32(cdb[10:14]))
		return copy(dataIn[:min(alloc, len(dataIn))], b[:]), statusGood, nil
	case scsi.OpRead10, scsi.OpRead16, scsi.OpWrite10, scsi.OpWrite16:
		lba, blocks, _ := scsi.DecodeRW(cdb)
		if lba > d.blocks || uint64(blocks) > d.blocks-lba {
			return d.check(scsi.SenseIllegalRequest, 0x21, 0x00)
		}
		nbytes := uint64(blocks) * uint64(d.blockSize)
		off := lba * uint64(d.blockSize)
		if op == scsi.OpRead10 || op == scsi.OpRead16 {
			m := min(uint64(len(dataIn)), nbytes)
			d.copyOut(dataIn[:m], off)
			return int(m), statusGood, nil
		}
		if d.readOnly {
			return d.check(scsi.SenseDataProtect, 0x27, 0x00)
		}
		m := min(uint64(len(dataOut)), nbytes)
		d.copyIn(dataOut[:m], off)
		return int(m), statusGood, nil
	}
	return d.check(scsi.SenseIllegalRequest, 0x20, 0x00)
}

func (d *Disk) check(key scsi.SenseKey, asc, ascq uint8) (int, uint8, []byte) {
	s := scsi.FixedSense(key, asc, ascq)
	d.pending = s
	return 0, statusCheck, s
}

func (d *Disk) copyOut(p []byte, off uint64) {
	for len(p) > 0 {
		ci, co := off/chunkSize, off%chunkSize
		n := min(uint64(len(p)), chunkSize-co)
		if c := d.chunks[ci]; c != nil {
			copy(p[:n], c[co:])
		} else {
			clear(p[:n])
			if off < uint64(len(d.base)) {
				copy(p[:n], d.base[off:])
			}
		}
		p, off = p[n:], off+n
	}
}

func (d *Disk) copyIn(p []byte, off uint64) {
	for len(p) > 0 {
		ci, co := off/chunkSize, off%chunkSize
		n := min(uint64(len(p)), chunkSize-co)
		c := d.chunks[ci]
		if c == nil {
			c = new([chunkSize]byte)
			if b := ci * chunkSize; b < uint64(len(d.base)) {
				copy(c[:], d.base[b:])
			}
			d.chunks[ci] = c
		}
		copy(c[co:], p[:n])
		p, off = p[n:], off+n
	}
}

func pad(dst []byte, s string) {
	for i := range dst {
		dst[i] = ' '
	}
	copy(dst, s)
}
