package blockdev

import (
	"encoding/binary"
	"encoding/json"
	"errors"
)

// Method names.
const (
	MethodInquiry  = "inquiry"
	MethodCapacity = "capacity"
	MethodRead     = "read"
	MethodWrite    = "write"
)

// MaxTransfer bounds one read or write request, so a client cannot make
// the driver allocate without limit.
const MaxTransfer = 16 << 20

// ErrBadRequest reports a malformed method argument.
var ErrBadRequest = errors.New("malformed request")

// Inquiry is the reply of "inquiry".
type Inquiry struct {
	Vendor    string `json:"vendor"`
	Product   string `json:"product"`
	Revision  string `json:"revision"`
	Type      int    `json:"type"`
	Removable bool   `json:"removable"`
}

// Capacity is the reply of "capacity".
type Capacity struct {
	Blocks    uint64 `json:"blocks"`
	BlockSize uint32 `json:"block_size"`
}

// EncodeRead encodes a "read" request.
func EncodeRead(lba uint64, blocks uint32) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 12), lba)
	return binary.BigEndian.AppendUint32(b, blocks)
}

// EncodeWrite encodes a "write" request.
func EncodeWrite(lba uint64, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(data)), lba)
	return append(b, data...)
}

// DecodeInquiry decodes an "inquiry" reply.
func DecodeInquiry(b []byte) (Inquiry, error) {
	var q Inquiry
	err := json.Unmarshal(b, &q)
	return q, err
}

// DecodeCapacity decodes a "capacity" reply.
func DecodeCapacity(b []byte) (Capacity, error) {
	var c Capacity
	err := json.Unmarshal(b, &c)
	return c, err
}
