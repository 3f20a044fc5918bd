package devgrant

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The device socket protocol (docs/devgrant.md): one message per
// SOCK_SEQPACKET packet, little-endian,
//
//	version u8 | op u8 | id u32 | body
//
// The driver sends requests (a class's ops) and cancels; the daemon answers
// each request once, with reply (the op's result) or error (code u8, then
// a message when the code alone does not say it). A cancel names the
// request by its id and is not answered; the request still is (mostly with
// code canceled).
const (
	// ProtocolVersion is the version byte of every message.
	ProtocolVersion = 1
	headerLen       = 6
	// MaxData bounds the data of one message (a report, a command's data,
	// a transfer): within a default socket send buffer.
	MaxData = 128 << 10
	// maxMessage is the largest message: header, op fields, data.
	maxMessage = headerLen + 64 + MaxData
	// maxErrorText bounds an error message.
	maxErrorText = 512
)

// Generic ops. Class ops start at 0x10 (HID), 0x20 (SCSI), 0x30 (USB).
const (
	opCancel byte = 0x01
	opReply  byte = 0x02
	opError  byte = 0x03
)

// ErrProtocol: a message that does not decode.
var ErrProtocol = errors.New("malformed device socket message")

// message is one decoded packet; body aliases the packet.
type message struct {
	op   byte
	id   uint32
	body []byte
}

func appendHeader(b []byte, op byte, id uint32) []byte {
	b = append(b, ProtocolVersion, op)
	return binary.LittleEndian.AppendUint32(b, id)
}

func parseMessage(p []byte) (message, error) {
	switch {
	case len(p) < headerLen:
		return message{}, fmt.Errorf("%w: %d bytes", ErrProtocol, len(p))
	case len(p) > maxMessage:
		return message{}, fmt.Errorf("%w: %d bytes, more than %d", ErrProtocol, len(p), maxMessage)
	case p[0] != ProtocolVersion:
		return message{}, fmt.Errorf("%w: version %d, want %d", ErrProtocol, p[0], ProtocolVersion)
	}
	return message{op: p[1], id: binary.LittleEndian.Uint32(p[2:]), body: p[headerLen:]}, nil
}

// reader walks a body's fields; the first short read sets err.
type reader struct {
	b   []byte
	err error
}

func (r *reader) need(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = fmt.Errorf("%w: body ends early", ErrProtocol)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() byte {
	if v := r.need(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.need(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.need(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

// size reads a length the peer asks for (data to read back), bounded.
func (r *reader) size() int {
	n := r.u32()
	if r.err == nil && n > MaxData {
		r.err = fmt.Errorf("%w: length %d over %d", ErrProtocol, n, MaxData)
		return 0
	}
	return int(n)
}

// rest is the remaining bytes (data), bounded.
func (r *reader) rest() []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) > MaxData {
		r.err = fmt.Errorf("%w: %d data bytes over %d", ErrProtocol, len(r.b), MaxData)
		return nil
	}
	v := r.b
	r.b = nil
	return v
}

// done fails if bytes are left over: a field this version does not know.
func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrProtocol, len(r.b))
	}
	return r.err
}

// Error codes of an error message. The daemon sends the code of the first
// sentinel of its class table the error matches; the driver side turns the
// code back into that class's sentinel.
const (
	codeOther      byte = 0 // the message says it all
	codeNoDevice   byte = 1
	codeClosed     byte = 2
	codeCanceled   byte = 3
	codeDeadline   byte = 4
	codeInvalid    byte = 5 // a report size, a CDB, a request the class refuses
	codeNotGranted byte = 6 // an interface or endpoint outside the grant
	codeBusy       byte = 7
	codeTimeout    byte = 8
	codeStall      byte = 9
	codeOverflow   byte = 10
	codeNotClaimed byte = 11
	codeTooMany    byte = 12 // too many requests in flight
)

// errTooMany: the driver has more requests in flight than the daemon serves.
var errTooMany = errors.New("too many requests in flight on the device socket")

func appendError(b []byte, code byte, text string) []byte {
	b = append(b, code)
	if len(text) > maxErrorText {
		text = text[:maxErrorText]
	}
	return append(b, text...)
}

func parseError(body []byte) (code byte, text string, err error) {
	if len(body) < 1 || len(body) > 1+maxErrorText {
		return 0, "", fmt.Errorf("%w: error of %d bytes", ErrProtocol, len(body))
	}
	return body[0], string(body[1:]), nil
}

// codeError is an error that crossed the socket: its text is the daemon's
// (or the sentinel's), and it matches the sentinel of its code.
type codeError struct {
	sentinel error
	text     string
}

func (e *codeError) Error() string { return e.text }
func (e *codeError) Unwrap() error { return e.sentinel }

// codeTable maps codes to one class's sentinels, both ways.
type codeTable []struct {
	code byte
	err  error
}

// encode finds err's code; the text is sent only for codeOther.
func (t codeTable) encode(err error) (byte, string) {
	for _, c := range t {
		if errors.Is(err, c.err) {
			return c.code, ""
		}
	}
	return codeOther, err.Error()
}

// decode turns a code and text back into an error matching the sentinel.
func (t codeTable) decode(code byte, text string) error {
	for _, c := range t {
		if c.code == code {
			if text == "" {
				return c.err
			}
			return &codeError{sentinel: c.err, text: text}
		}
	}
	if text == "" {
		text = fmt.Sprintf("device socket error code %d", code)
	}
	return errors.New(text)
}
