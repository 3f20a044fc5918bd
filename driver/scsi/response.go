package scsi

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// PeripheralType is the peripheral device type of INQUIRY data.
type PeripheralType uint8

const (
	TypeDisk    PeripheralType = 0x00
	TypeTape    PeripheralType = 0x01
	TypeCDROM   PeripheralType = 0x05
	TypeOptical PeripheralType = 0x07
	TypeRAID    PeripheralType = 0x0c
	TypeEnc     PeripheralType = 0x0d
	TypeNone    PeripheralType = 0x1f
)

// InquiryData is standard INQUIRY data.
type InquiryData struct {
	Qualifier  uint8 // 0: connected, 1: not connected, 3: no LUN
	Type       PeripheralType
	Removable  bool
	Version    uint8
	Vendor     string // T10 vendor identification, trailing spaces trimmed
	Product    string
	Revision   string
	AdditLen   int
	RawVersion uint8
}

// InquiryLen is the allocation length this package asks for: the standard
// 36 bytes every target supports.
const InquiryLen = 36

// ParseInquiry decodes standard INQUIRY data. At least 5 bytes are needed;
// identification strings the buffer is too short to carry are empty.
func ParseInquiry(b []byte) (InquiryData, error) {
	var d InquiryData
	if len(b) < 5 {
		return d, fmt.Errorf("%w: INQUIRY data is %d bytes, need at least 5", ErrShortResponse, len(b))
	}
	d.Qualifier = b[0] >> 5
	d.Type = PeripheralType(b[0] & 0x1f)
	d.Removable = b[1]&0x80 != 0
	d.Version = b[2]
	d.RawVersion = b[2]
	d.AdditLen = int(b[4])
	if end := 5 + d.AdditLen; end < len(b) {
		b = b[:end]
	}
	d.Vendor = field(b, 8, 16)
	d.Product = field(b, 16, 32)
	d.Revision = field(b, 32, 36)
	return d, nil
}

// field returns b[from:to] as text with trailing spaces and NULs trimmed;
// non-printable bytes become '?', so a broken device cannot inject control
// characters into logs.
func field(b []byte, from, to int) string {
	if len(b) <= from {
		return ""
	}
	s := b[from:min(to, len(b))]
	s = bytes.TrimRight(s, " \x00")
	out := make([]byte, len(s))
	for i, c := range s {
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}

// Capacity is the result of READ CAPACITY.
type Capacity struct {
	LastLBA   uint64 // address of the last logical block
	BlockSize uint32 // logical block length in bytes
	// From READ CAPACITY(16) only.
	ProtectionEnabled bool
	LogicalPerPhysExp uint8
}

// Blocks is the number of logical blocks.
func (c Capacity) Blocks() uint64 { return c.LastLBA + 1 }

// Bytes is the capacity in bytes.
func (c Capacity) Bytes() uint64 { return c.Blocks() * uint64(c.BlockSize) }

// ParseReadCapacity10 decodes READ CAPACITY(10) data (8 bytes). A LastLBA of
// 0xffffffff means the caller must use READ CAPACITY(16).
func ParseReadCapacity10(b []byte) (Capacity, error) {
	if len(b) < 8 {
		return Capacity{}, fmt.Errorf("%w: READ CAPACITY(10) data is %d bytes, need 8", ErrShortResponse, len(b))
	}
	c := Capacity{
		LastLBA:   uint64(binary.BigEndian.Uint32(b[0:4])),
		BlockSize: binary.BigEndian.Uint32(b[4:8]),
	}
	return c, validCapacity(c)
}

// ParseReadCapacity16 decodes READ CAPACITY(16) data (at least 12 bytes).
func ParseReadCapacity16(b []byte) (Capacity, error) {
	if len(b) < 12 {
		return Capacity{}, fmt.Errorf("%w: READ CAPACITY(16) data is %d bytes, need 12", ErrShortResponse, len(b))
	}
	c := Capacity{
		LastLBA:   binary.BigEndian.Uint64(b[0:8]),
		BlockSize: binary.BigEndian.Uint32(b[8:12]),
	}
	if len(b) >= 14 {
		c.ProtectionEnabled = b[12]&1 != 0
		c.LogicalPerPhysExp = b[13] & 0x0f
	}
	return c, validCapacity(c)
}

// validCapacity rejects a block size that would make block arithmetic
// meaningless (0, or absurdly large) — a buggy bridge must not make us
// allocate gigabytes per block.
func validCapacity(c Capacity) error {
	if c.BlockSize == 0 || c.BlockSize > 1<<20 {
		return fmt.Errorf("implausible logical block length %d", c.BlockSize)
	}
	return nil
}
