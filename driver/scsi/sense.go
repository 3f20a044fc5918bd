package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SenseKey is the 4-bit sense key of SPC-4 sense data.
type SenseKey uint8

const (
	SenseNoSense        SenseKey = 0x0
	SenseRecoveredError SenseKey = 0x1
	SenseNotReady       SenseKey = 0x2
	SenseMediumError    SenseKey = 0x3
	SenseHardwareError  SenseKey = 0x4
	SenseIllegalRequest SenseKey = 0x5
	SenseUnitAttention  SenseKey = 0x6
	SenseDataProtect    SenseKey = 0x7
	SenseBlankCheck     SenseKey = 0x8
	SenseVendorSpecific SenseKey = 0x9
	SenseCopyAborted    SenseKey = 0xa
	SenseAbortedCommand SenseKey = 0xb
	SenseVolumeOverflow SenseKey = 0xd
	SenseMiscompare     SenseKey = 0xe
)

var senseKeyNames = [...]string{
	"NO SENSE", "RECOVERED ERROR", "NOT READY", "MEDIUM ERROR", "HARDWARE ERROR",
	"ILLEGAL REQUEST", "UNIT ATTENTION", "DATA PROTECT", "BLANK CHECK", "VENDOR SPECIFIC",
	"COPY ABORTED", "ABORTED COMMAND", "RESERVED", "VOLUME OVERFLOW", "MISCOMPARE", "COMPLETED",
}

func (k SenseKey) String() string { return senseKeyNames[k&0xf] }

// Sense is decoded sense data, fixed (0x70/0x71) or descriptor (0x72/0x73)
// format.
type Sense struct {
	ResponseCode uint8
	Descriptor   bool // descriptor format
	Deferred     bool // the error belongs to an earlier command
	Key          SenseKey
	ASC, ASCQ    uint8
	// Information is the INFORMATION field (often the failing LBA) when
	// InfoValid is set.
	Information uint64
	InfoValid   bool
	FileMark    bool
	EOM         bool
	ILI         bool
}

// Sense data response codes.
const (
	senseFixedCurrent      = 0x70
	senseFixedDeferred     = 0x71
	senseDescriptorCurrent = 0x72
	senseDescriptorDefer   = 0x73
)

// ErrBadSense reports sense data that cannot be decoded.
var ErrBadSense = errors.New("malformed sense data")

// ParseSense decodes sense data. Trailing bytes past the ADDITIONAL SENSE
// LENGTH are ignored; fields the buffer is too short to carry stay zero.
func ParseSense(b []byte) (Sense, error) {
	var s Sense
	if len(b) < 1 {
		return s, fmt.Errorf("%w: empty", ErrBadSense)
	}
	s.ResponseCode = b[0] & 0x7f
	switch s.ResponseCode {
	case senseFixedCurrent, senseFixedDeferred:
		s.Deferred = s.ResponseCode == senseFixedDeferred
		if len(b) < 3 {
			return s, fmt.Errorf("%w: fixed format needs 3 bytes, have %d", ErrBadSense, len(b))
		}
		// Bound the buffer by the declared length: stale bytes after it
		// are not sense data.
		if len(b) >= 8 {
			if n := 8 + int(b[7]); n < len(b) {
				b = b[:n]
			}
		}
		s.Key = SenseKey(b[2] & 0x0f)
		s.FileMark = b[2]&0x80 != 0
		s.EOM = b[2]&0x40 != 0
		s.ILI = b[2]&0x20 != 0
		if len(b) >= 7 {
			s.Information = uint64(binary.BigEndian.Uint32(b[3:7]))
			s.InfoValid = b[0]&0x80 != 0
		}
		if len(b) >= 13 {
			s.ASC = b[12]
		}
		if len(b) >= 14 {
			s.ASCQ = b[13]
		}
		return s, nil
	case senseDescriptorCurrent, senseDescriptorDefer:
		s.Descriptor = true
		s.Deferred = s.ResponseCode == senseDescriptorDefer
		if len(b) < 4 {
			return s, fmt.Errorf("%w: descriptor format needs 4 bytes, have %d", ErrBadSense, len(b))
		}
		s.Key = SenseKey(b[1] & 0x0f)
		s.ASC, s.ASCQ = b[2], b[3]
		if len(b) < 8 {
			return s, nil
		}
		end := 8 + int(b[7])
		if end > len(b) {
			end = len(b)
		}
		for p := 8; p+2 <= end; {
			typ, dl := b[p], int(b[p+1])
			d := b[p+2 : min(p+2+dl, end)]
			switch typ {
			case 0x00: // information
				if len(d) >= 10 {
					s.InfoValid = d[0]&0x80 != 0
					s.Information = binary.BigEndian.Uint64(d[2:10])
				}
			case 0x04: // stream commands
				if len(d) >= 2 {
					s.FileMark = d[1]&0x80 != 0
					s.EOM = d[1]&0x40 != 0
					s.ILI = d[1]&0x20 != 0
				}
			case 0x05: // block commands
				if len(d) >= 2 {
					s.ILI = d[1]&0x20 != 0
				}
			}
			p += 2 + dl
		}
		return s, nil
	}
	return s, fmt.Errorf("%w: response code 0x%02x", ErrBadSense, s.ResponseCode)
}

// SenseError is the error a command returns when the target reports CHECK
// CONDITION. It matches the sense-key sentinels with errors.Is.
type SenseError struct {
	Op string // the command, e.g. "READ(10)"
	Sense
}

func (e *SenseError) Error() string {
	msg := fmt.Sprintf("%s: %s (ASC/ASCQ 0x%02x/0x%02x", e.Op, e.Key, e.ASC, e.ASCQ)
	if d := ascText(e.ASC, e.ASCQ); d != "" {
		msg += " " + d
	}
	msg += ")"
	if e.InfoValid {
		msg += fmt.Sprintf(" info=%d", e.Information)
	}
	if e.Deferred {
		msg += " [deferred]"
	}
	return msg
}

// Is reports whether target is the sentinel for this sense key.
func (e *SenseError) Is(target error) bool {
	switch target {
	case ErrCheckCondition:
		return true
	case ErrNotReady:
		return e.Key == SenseNotReady
	case ErrMediumError:
		return e.Key == SenseMediumError
	case ErrHardwareError:
		return e.Key == SenseHardwareError
	case ErrIllegalRequest:
		return e.Key == SenseIllegalRequest
	case ErrUnitAttention:
		return e.Key == SenseUnitAttention
	case ErrDataProtect:
		return e.Key == SenseDataProtect
	case ErrAbortedCommand:
		return e.Key == SenseAbortedCommand
	}
	return false
}

// ascText names the additional sense codes a disk driver meets most.
func ascText(asc, ascq uint8) string {
	switch uint16(asc)<<8 | uint16(ascq) {
	case 0x0401:
		return "logical unit is in process of becoming ready"
	case 0x0402:
		return "initializing command required"
	case 0x1100:
		return "unrecovered read error"
	case 0x0c00:
		return "write error"
	case 0x2000:
		return "invalid command operation code"
	case 0x2100:
		return "logical block address out of range"
	case 0x2400:
		return "invalid field in cdb"
	case 0x2500:
		return "logical unit not supported"
	case 0x2700:
		return "write protected"
	case 0x2800:
		return "not ready to ready change, medium may have changed"
	case 0x2900:
		return "power on, reset, or bus device reset occurred"
	case 0x2a09:
		return "capacity data has changed"
	case 0x3a00:
		return "medium not present"
	}
	return ""
}

// FixedSense encodes s in fixed format (18 bytes). Targets use it.
func FixedSense(key SenseKey, asc, ascq uint8) []byte {
	b := make([]byte, 18)
	b[0] = senseFixedCurrent
	b[2] = byte(key & 0xf)
	b[7] = 10
	b[12], b[13] = asc, ascq
	return b
}
