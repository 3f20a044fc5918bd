package scsi

import (
	"encoding/binary"
	"fmt"
)

// Operation codes used by this package.
const (
	OpTestUnitReady    = 0x00
	OpRequestSense     = 0x03
	OpInquiry          = 0x12
	OpReadCapacity10   = 0x25
	OpRead10           = 0x28
	OpWrite10          = 0x2a
	OpSynchronizeCache = 0x35
	OpRead16           = 0x88
	OpWrite16          = 0x8a
	OpServiceAction16  = 0x9e // READ CAPACITY(16) is service action 0x10
	SAReadCapacity16   = 0x10
)

// Status is a SCSI status byte (SAM-5).
type Status uint8

const (
	StatusGood                Status = 0x00
	StatusCheckCondition      Status = 0x02
	StatusConditionMet        Status = 0x04
	StatusBusy                Status = 0x08
	StatusReservationConflict Status = 0x18
	StatusTaskSetFull         Status = 0x28
	StatusACAActive           Status = 0x30
	StatusTaskAborted         Status = 0x40
)

func (s Status) String() string {
	switch s {
	case StatusGood:
		return "GOOD"
	case StatusCheckCondition:
		return "CHECK CONDITION"
	case StatusConditionMet:
		return "CONDITION MET"
	case StatusBusy:
		return "BUSY"
	case StatusReservationConflict:
		return "RESERVATION CONFLICT"
	case StatusTaskSetFull:
		return "TASK SET FULL"
	case StatusACAActive:
		return "ACA ACTIVE"
	case StatusTaskAborted:
		return "TASK ABORTED"
	}
	return fmt.Sprintf("0x%02x", uint8(s))
}

// MaxLBA10 is the largest LBA a 10-byte CDB can address; MaxBlocks10 the
// largest transfer length it can carry.
const (
	MaxLBA10    = 0xffffffff
	MaxBlocks10 = 0xffff
)

// TestUnitReadyCDB returns a TEST UNIT READY CDB.
func TestUnitReadyCDB() []byte { return make([]byte, 6) }

// InquiryCDB returns a standard INQUIRY CDB asking for allocLen bytes.
func InquiryCDB(allocLen uint16) []byte {
	c := make([]byte, 6)
	c[0] = OpInquiry
	binary.BigEndian.PutUint16(c[3:], allocLen)
	return c
}

// VPDInquiryCDB returns an INQUIRY CDB for vital product data page.
func VPDInquiryCDB(page uint8, allocLen uint16) []byte {
	c := InquiryCDB(allocLen)
	c[1] = 1 // EVPD
	c[2] = page
	return c
}

// RequestSenseCDB returns a REQUEST SENSE CDB (fixed format requested).
func RequestSenseCDB(allocLen uint8) []byte {
	c := make([]byte, 6)
	c[0] = OpRequestSense
	c[4] = allocLen
	return c
}

// ReadCapacity10CDB returns a READ CAPACITY(10) CDB.
func ReadCapacity10CDB() []byte {
	c := make([]byte, 10)
	c[0] = OpReadCapacity10
	return c
}

// ReadCapacity16CDB returns a READ CAPACITY(16) CDB asking for allocLen bytes.
func ReadCapacity16CDB(allocLen uint32) []byte {
	c := make([]byte, 16)
	c[0] = OpServiceAction16
	c[1] = SAReadCapacity16
	binary.BigEndian.PutUint32(c[10:], allocLen)
	return c
}

// Read10CDB returns a READ(10) CDB; it fails if lba or blocks do not fit.
func Read10CDB(lba uint64, blocks uint32) ([]byte, error) {
	return rw10(OpRead10, lba, blocks)
}

// Write10CDB returns a WRITE(10) CDB; it fails if lba or blocks do not fit.
func Write10CDB(lba uint64, blocks uint32) ([]byte, error) {
	return rw10(OpWrite10, lba, blocks)
}

// Read16CDB returns a READ(16) CDB.
func Read16CDB(lba uint64, blocks uint32) []byte { return rw16(OpRead16, lba, blocks) }

// Write16CDB returns a WRITE(16) CDB.
func Write16CDB(lba uint64, blocks uint32) []byte { return rw16(OpWrite16, lba, blocks) }

func rw10(op byte, lba uint64, blocks uint32) ([]byte, error) {
	if lba > MaxLBA10 || blocks > MaxBlocks10 {
		return nil, fmt.Errorf("%w: lba %d / %d blocks do not fit a 10-byte CDB", ErrInvalidRequest, lba, blocks)
	}
	c := make([]byte, 10)
	c[0] = op
	binary.BigEndian.PutUint32(c[2:], uint32(lba))
	binary.BigEndian.PutUint16(c[7:], uint16(blocks))
	return c, nil
}

func rw16(op byte, lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = op
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

// SynchronizeCache10CDB returns a SYNCHRONIZE CACHE(10) CDB for the whole
// medium (LBA 0, 0 blocks means "to the end").
func SynchronizeCache10CDB() []byte {
	c := make([]byte, 10)
	c[0] = OpSynchronizeCache
	return c
}

// CDBLen returns the CDB length implied by the group code of opcode op, or 0
// for reserved/vendor groups.
func CDBLen(op byte) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	}
	return 0
}

// DecodeRW extracts the LBA and transfer length from a READ/WRITE(10/16)
// CDB. ok is false for other opcodes or short CDBs. Targets and tests use it.
func DecodeRW(cdb []byte) (lba uint64, blocks uint32, ok bool) {
	if len(cdb) == 0 {
		return 0, 0, false
	}
	switch cdb[0] {
	case OpRead10, OpWrite10:
		if len(cdb) < 10 {
			return 0, 0, false
		}
		return uint64(binary.BigEndian.Uint32(cdb[2:])), uint32(binary.BigEndian.Uint16(cdb[7:])), true
	case OpRead16, OpWrite16:
		if len(cdb) < 16 {
			return 0, 0, false
		}
		return binary.BigEndian.Uint64(cdb[2:]), binary.BigEndian.Uint32(cdb[10:]), true
	}
	return 0, 0, false
}
