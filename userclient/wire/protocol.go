package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the newest protocol version drvkit speaks. Version 2
// adds the cancel frame and max_inflight in welcome, version 3 the part
// frame that streams a reply larger than a frame, version 4 direct call
// channels to out-of-process drivers (PROTOCOL.md, "Versions"); the server
// and the client also speak every version down to MinVersion.
const Version = 4

// MinVersion is the oldest protocol version drvkit speaks.
const MinVersion = 1

// ProtocolName is the value of "protocol" in the hello and welcome payloads.
const ProtocolName = "drvkit-userclient"

// DefaultMaxFrame is the default limit on a frame's length field (1 MiB).
const DefaultMaxFrame = 1 << 20

// HeaderLen is the fixed part of a frame after the 4-byte length prefix:
// type(1) flags(1) reserved(2) id(8) control length(4).
const HeaderLen = 16

// MsgType is a frame's type byte.
type MsgType uint8

// Frame types. Values are part of the wire format; never renumber.
const (
	TypeHello        MsgType = 1  // client → server, first frame
	TypeWelcome      MsgType = 2  // server → client, answer to hello
	TypeOpen         MsgType = 3  // open a service, reply carries a handle
	TypeClose        MsgType = 4  // close a handle
	TypeCall         MsgType = 5  // call a driver method on a handle
	TypeReply        MsgType = 6  // success answer to a request
	TypeNotification MsgType = 7  // server → client, unsolicited (id 0)
	TypeError        MsgType = 8  // failure answer, or connection-level error (id 0)
	TypeAdmin        MsgType = 9  // administrative call: terminate, unload, leaks, inspect, …
	TypePing         MsgType = 10 // liveness check, answered by a reply
	TypeCancel       MsgType = 11 // client → server (version 2): cancel the call or admin request in its id field; never answered
	TypePart         MsgType = 12 // server → client (version 3): the next piece of the reply to request id; the reply or error frame ends it
)

func (t MsgType) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeWelcome:
		return "welcome"
	case TypeOpen:
		return "open"
	case TypeClose:
		return "close"
	case TypeCall:
		return "call"
	case TypeReply:
		return "reply"
	case TypeNotification:
		return "notification"
	case TypeError:
		return "error"
	case TypeAdmin:
		return "admin"
	case TypePing:
		return "ping"
	case TypeCancel:
		return "cancel"
	case TypePart:
		return "part"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

func (t MsgType) known() bool { return t >= TypeHello && t <= TypePart }

// checkShape refuses what no frame of f's type may carry, so that encoder
// and decoder agree on it: a cancel frame is exactly its header, and names
// a request (id 0 never is one).
func checkShape(f *Frame) error {
	if f.Type == TypePart && f.ID == 0 {
		return Errorf(nil, "part frame names request id 0")
	}
	if f.Type != TypeCancel {
		return nil
	}
	if n := len(f.Control) + len(f.Data); n != 0 {
		return Errorf(nil, "cancel frame carries %d bytes of payload, want none", n)
	}
	if f.ID == 0 {
		return Errorf(nil, "cancel frame names request id 0")
	}
	return nil
}

// FlagFatal on an error frame says the sender closes the connection after it.
const FlagFatal uint8 = 1

const knownFlags = FlagFatal

// Frame is one message: a JSON control payload and raw bulk data.
type Frame struct {
	Type    MsgType
	Flags   uint8
	ID      uint64 // request ID chosen by the client; replies and errors echo it
	Control []byte // JSON, may be empty
	Data    []byte // raw bytes, may be empty
}

// Size is the value of the frame's length field.
func (f *Frame) Size() int { return HeaderLen + len(f.Control) + len(f.Data) }

// AppendFrame appends the encoding of f to dst. It fails with ErrProtocol if
// f is larger than max or is not a valid frame.
func AppendFrame(dst []byte, f *Frame, max int) ([]byte, error) {
	if !f.Type.known() {
		return dst, Errorf(nil, "unknown frame type %d", uint8(f.Type))
	}
	if f.Flags&^knownFlags != 0 {
		return dst, Errorf(nil, "unknown flags %#x", f.Flags)
	}
	if err := checkShape(f); err != nil {
		return dst, err
	}
	n := f.Size()
	if n > max {
		return dst, Errorf(nil, "frame of %d bytes exceeds the maximum of %d", n, max)
	}
	var h [4 + HeaderLen]byte
	binary.BigEndian.PutUint32(h[0:], uint32(n))
	h[4] = byte(f.Type)
	h[5] = f.Flags
	binary.BigEndian.PutUint64(h[8:], f.ID)
	binary.BigEndian.PutUint32(h[16:], uint32(len(f.Control)))
	dst = append(dst, h[:]...)
	dst = append(dst, f.Control...)
	return append(dst, f.Data...), nil
}

// DecodeFrame decodes one frame from the start of b. It returns the frame
// (whose slices alias b), the number of bytes used, and an error:
// io.ErrUnexpectedEOF wrapped in a ProtocolError if b holds only part of a
// frame, a ProtocolError for anything malformed.
func DecodeFrame(b []byte, max int) (Frame, int, error) {
	if len(b) < 4 {
		return Frame{}, 0, Errorf(io.ErrUnexpectedEOF, "truncated length prefix (%d of 4 bytes)", len(b))
	}
	n, err := checkLength(binary.BigEndian.Uint32(b), max)
	if err != nil {
		return Frame{}, 0, err
	}
	if len(b)-4 < n {
		return Frame{}, 0, Errorf(io.ErrUnexpectedEOF, "truncated frame (%d of %d bytes)", len(b)-4, n)
	}
	f, err := parseBody(b[4 : 4+n])
	return f, 4 + n, err
}

func checkLength(n uint32, max int) (int, error) {
	if n < HeaderLen {
		return 0, Errorf(nil, "frame length %d is shorter than the %d-byte header", n, HeaderLen)
	}
	if uint64(n) > uint64(max) {
		return 0, Errorf(nil, "frame length %d exceeds the maximum of %d", n, max)
	}
	return int(n), nil
}

func parseBody(b []byte) (Frame, error) {
	f := Frame{Type: MsgType(b[0]), Flags: b[1], ID: binary.BigEndian.Uint64(b[4:])}
	if !f.Type.known() {
		return Frame{}, Errorf(nil, "unknown frame type %d", b[0])
	}
	if f.Flags&^knownFlags != 0 {
		return Frame{}, Errorf(nil, "unknown flags %#x in %v frame", f.Flags, f.Type)
	}
	if b[2] != 0 || b[3] != 0 {
		return Frame{}, Errorf(nil, "reserved bytes are not zero in %v frame", f.Type)
	}
	cl := binary.BigEndian.Uint32(b[12:])
	if uint64(cl) > uint64(len(b)-HeaderLen) {
		return Frame{}, Errorf(nil, "control length %d exceeds the %d bytes of payload in %v frame", cl, len(b)-HeaderLen, f.Type)
	}
	rest := b[HeaderLen:]
	if cl > 0 {
		f.Control = rest[:cl:cl]
	}
	if len(rest) > int(cl) {
		f.Data = rest[cl:]
	}
	if err := checkShape(&f); err != nil {
		return Frame{}, err
	}
	return f, nil
}

// Decoder reads frames from a stream.
//
// Its own read buffer rather than a bufio.Reader: what reading a frame
// touches (the buffer's bounds, the stream, the limit) fits one cache
// line, and a fan-out to a thousand clients finds each client's decoder
// cold in the cache.
type Decoder struct {
	buf  []byte // the read buffer: buf[r:w] is read and not yet returned
	r, w int
	rd   io.Reader
	max  int
	body []byte // the body of a frame larger than buf
}

// readBufSize is the decoder's read buffer: a frame that fits is parsed
// where it lies.
const readBufSize = 8 << 10

// maxEmptyReads is how many reads returning nothing and no error in a row
// make io.ErrNoProgress (as in bufio).
const maxEmptyReads = 100

// NewDecoder returns a decoder refusing frames whose length field exceeds
// max (DefaultMaxFrame if max <= 0).
func NewDecoder(r io.Reader, max int) *Decoder {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	// Buffered: a frame costs one read system call, not two, and frames
	// that arrive together are read together.
	return &Decoder{buf: make([]byte, readBufSize), rd: r, max: max}
}

// fill reads from the stream once into the buffer's free end, first moving
// what is unread to its front; the buffer must not be full.
func (d *Decoder) fill() error {
	if d.r > 0 {
		d.w = copy(d.buf, d.buf[d.r:d.w])
		d.r = 0
	}
	n, err := d.readSome(d.buf[d.w:])
	d.w += n
	return err
}

// readInto copies what is buffered into p, or reads into p directly when
// nothing is.
func (d *Decoder) readInto(p []byte) (int, error) {
	if d.r < d.w {
		n := copy(p, d.buf[d.r:d.w])
		d.r += n
		return n, nil
	}
	return d.readSome(p)
}

// errImpossibleCount is a reader's count outside 0..len(p): a broken
// io.Reader, refused rather than trusted with the buffer's bounds.
var errImpossibleCount = errors.New("reader returned an impossible count")

// readSome reads into p until something arrives. It reports an error only
// when nothing did: a read that brings data and an error returns the
// data, and the next read the error (net.Conn's errors and io.EOF stay).
func (d *Decoder) readSome(p []byte) (int, error) {
	for range maxEmptyReads {
		n, err := d.rd.Read(p)
		if n < 0 || n > len(p) {
			return 0, errImpossibleCount
		}
		if n > 0 {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
	return 0, io.ErrNoProgress
}

// Wait blocks until the first byte of the next frame is readable and
// reports whether the whole frame is already buffered, so that a server
// can give the rest of a frame a deadline only when it has to wait for it.
// An error (a read deadline, EOF) consumed nothing: ReadFrame may follow.
func (d *Decoder) Wait() (complete bool, err error) {
	if d.r == d.w {
		if err := d.fill(); err != nil {
			return false, err
		}
	}
	if d.w-d.r < 4 {
		return false, nil
	}
	return uint64(d.w-d.r) >= 4+uint64(binary.BigEndian.Uint32(d.buf[d.r:])), nil
}

// Buffered is how many bytes have been read from the stream and not yet
// returned in a frame.
func (d *Decoder) Buffered() int { return d.w - d.r }

// growStep bounds how much a frame's buffer grows ahead of the bytes that
// arrived: a length prefix announcing 1 MiB followed by nothing costs this,
// not 1 MiB.
const growStep = 16 << 10

// ReadFrame reads the next frame. The frame's slices are valid until the
// next call of ReadFrame or Wait: a frame that fits the read buffer is
// parsed where it lies, not copied. It returns io.EOF on a clean end of
// stream between frames; a stream that ends inside a frame is a
// ProtocolError wrapping io.ErrUnexpectedEOF. The length is checked before
// the body is read, and the memory of a body larger than the read buffer
// is allocated as its bytes arrive (at most growStep or doubling ahead of
// them), so a giant length prefix costs nothing. An error of the stream
// itself (a read deadline) consumes nothing of a frame that fits the read
// buffer: a later call reads it whole.
func (d *Decoder) ReadFrame() (Frame, error) {
	for d.w-d.r < 4 {
		if err := d.fill(); err != nil {
			switch {
			case err == io.EOF && d.w == d.r:
				return Frame{}, io.EOF
			case err == io.EOF:
				return Frame{}, Errorf(io.ErrUnexpectedEOF, "truncated length prefix (%d of 4 bytes)", d.w-d.r)
			}
			return Frame{}, err
		}
	}
	n, err := checkLength(binary.BigEndian.Uint32(d.buf[d.r:]), d.max)
	if err != nil {
		d.r += 4
		return Frame{}, err
	}
	if 4+n <= len(d.buf) {
		// One read usually brought the whole frame: no copy, and the
		// buffer it lies in is the one the kernel just wrote to.
		for d.w-d.r < 4+n {
			if err := d.fill(); err != nil {
				if err == io.EOF {
					return Frame{}, Errorf(io.ErrUnexpectedEOF, "truncated frame (%d of %d bytes)", d.w-d.r-4, n)
				}
				return Frame{}, err
			}
		}
		b := d.buf[d.r+4 : d.r+4+n]
		d.r += 4 + n
		return parseBody(b)
	}
	d.r += 4
	body := d.body[:0]
	for len(body) < n {
		if len(body) == cap(body) {
			// Double what arrived, at least growStep, never past n.
			c := min(n, max(2*cap(body), growStep))
			nb := make([]byte, len(body), c)
			copy(nb, body)
			body = nb
		}
		got, err := d.readInto(body[len(body):min(n, cap(body))])
		body = body[:len(body)+got]
		if err != nil {
			if err == io.EOF {
				return Frame{}, Errorf(io.ErrUnexpectedEOF, "truncated frame (%d of %d bytes)", len(body), n)
			}
			return Frame{}, err
		}
	}
	d.body = body
	// Keep big buffers from pinning memory after one large frame.
	if cap(d.body) > 64<<10 {
		d.body = nil
	}
	return parseBody(body)
}
