package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func mustFrame(t testing.TB, f Frame) []byte {
	t.Helper()
	b, err := AppendFrame(nil, &f, DefaultMaxFrame)
	require.NoError(t, err)
	return b
}

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range []Frame{
		{Type: TypeHello, ID: 1, Control: []byte(`{"protocol":"drvkit-userclient","versions":[1]}`)},
		{Type: TypeCall, ID: 1<<64 - 1, Control: []byte(`{"handle":3,"method":"read"}`), Data: []byte{0, 1, 2, 255}},
		{Type: TypeReply, ID: 7, Data: bytes.Repeat([]byte{0xAA}, 4096)},
		{Type: TypeError, Flags: FlagFatal, Control: []byte(`{"code":"protocol","message":"x"}`)},
		{Type: TypePing},
		{Type: TypeCancel, ID: 42},
	} {
		t.Run(f.Type.String(), func(t *testing.T) {
			b := mustFrame(t, f)
			require.Len(t, b, 4+f.Size())
			got, n, err := DecodeFrame(b, DefaultMaxFrame)
			require.NoError(t, err)
			require.Equal(t, len(b), n)
			require.Equal(t, f, got)

			// The same through the stream decoder, twice in a row.
			d := NewDecoder(bytes.NewReader(append(b, b...)), 0)
			for range 2 {
				got, err := d.ReadFrame()
				require.NoError(t, err)
				require.Equal(t, f, got)
			}
			_, err = d.ReadFrame()
			require.ErrorIs(t, err, io.EOF)
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	good := mustFrame(t, Frame{Type: TypeCall, ID: 9, Control: []byte(`{}`), Data: []byte("data")})
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name   string
		in     []byte
		detail string
		eof    bool // truncated: wraps io.ErrUnexpectedEOF
	}{
		{"short prefix", []byte{0, 0}, "truncated length prefix", true},
		{"truncated body", good[:len(good)-1], "truncated frame", true},
		{"length below header", []byte{0, 0, 0, 3, 1, 2, 3}, "shorter than the 16-byte header", false},
		{"giant length", []byte{0xff, 0xff, 0xff, 0xff}, "exceeds the maximum", false},
		{"unknown type", mod(func(b []byte) []byte { b[4] = 200; return b }), "unknown frame type 200", false},
		{"type zero", mod(func(b []byte) []byte { b[4] = 0; return b }), "unknown frame type 0", false},
		{"unknown flags", mod(func(b []byte) []byte { b[5] = 0x80; return b }), "unknown flags", false},
		{"reserved", mod(func(b []byte) []byte { b[7] = 1; return b }), "reserved bytes", false},
		{"control too long", mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[16:], 1000); return b }), "control length 1000", false},
		{"cancel with payload", mod(func(b []byte) []byte { b[4] = byte(TypeCancel); return b }), "cancel frame carries 6 bytes of payload, want none", false},
		{"cancel of id 0", []byte{0, 0, 0, 16, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "cancel frame names request id 0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeFrame(tc.in, DefaultMaxFrame)
			require.ErrorIs(t, err, ErrProtocol)
			require.ErrorContains(t, err, tc.detail)
			require.Equal(t, tc.eof, errors.Is(err, io.ErrUnexpectedEOF), "%v", err)
			var pe *ProtocolError
			require.ErrorAs(t, err, &pe)

			_, err = NewDecoder(bytes.NewReader(tc.in), DefaultMaxFrame).ReadFrame()
			require.ErrorIs(t, err, ErrProtocol)
			require.ErrorContains(t, err, tc.detail)
		})
	}
}

// The encoder refuses the cancel frames the decoder refuses.
func TestAppendCancelShape(t *testing.T) {
	for _, f := range []Frame{
		{Type: TypeCancel, ID: 1, Control: []byte(`{}`)},
		{Type: TypeCancel, ID: 1, Data: []byte{1}},
		{Type: TypeCancel},
	} {
		_, err := AppendFrame(nil, &f, DefaultMaxFrame)
		require.ErrorIs(t, err, ErrProtocol)
		require.ErrorContains(t, err, "cancel frame")
	}
}

func TestMaxFrameConfigurable(t *testing.T) {
	f := Frame{Type: TypeReply, Data: make([]byte, 100)}
	_, err := AppendFrame(nil, &f, 64)
	require.ErrorIs(t, err, ErrProtocol)
	b := mustFrame(t, f)
	_, _, err = DecodeFrame(b, 64)
	require.ErrorContains(t, err, "exceeds the maximum of 64")
	_, _, err = DecodeFrame(b, 116)
	require.NoError(t, err)
}

// The giant length prefix must be refused before anything is allocated.
func TestDecoderGiantLengthAllocatesNothing(t *testing.T) {
	in := []byte{0x7f, 0xff, 0xff, 0xff}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		d := NewDecoder(bytes.NewReader(in), DefaultMaxFrame)
		_, err := d.ReadFrame()
		require.ErrorContains(t, err, "exceeds the maximum")
		require.Nil(t, d.body)
	}
	runtime.ReadMemStats(&after)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "a 2 GiB length prefix must not be allocated")
}

// TestErrorMapping: every code maps to its sentinel and back, so that
// errors.Is works across the socket; the codes are the wire format.
func TestErrorMapping(t *testing.T) {
	for code, want := range codeSentinel {
		err := error(&RemoteError{Code: code, Message: "m"})
		require.ErrorIs(t, err, want, code)
		require.Equal(t, code, CodeOf(&RemoteError{Code: code}))
		require.Equal(t, want, Sentinel(code))
		if code != CodeVersion && code != CodeBadRequest && code != CodeCancelled {
			require.Equal(t, code, CodeOf(fmt.Errorf("context: %w", want)), "the sentinel of %s", code)
		}
	}
	require.Equal(t, CodePermission, CodeOf(fmt.Errorf("open x: %w", ErrPermission)))
	require.Equal(t, CodeProtocol, CodeOf(Errorf(nil, "bad")))
	require.Equal(t, CodeFailed, CodeOf(errors.New("driver error")))
	// A device that vanished during a call: the cause wins over the
	// termination it brings.
	require.Equal(t, CodeNoDevice, CodeOf(fmt.Errorf("%w: %w", ErrTerminated, ErrNoDevice)))

	// Stable: these strings are what other implementations send.
	require.Equal(t, map[string]string{
		"protocol": CodeProtocol, "version": CodeVersion, "permission": CodePermission,
		"no_service": CodeNoService, "terminated": CodeTerminated, "no_method": CodeNoMethod,
		"no_device": CodeNoDevice, "closed": CodeClosed, "overflow": CodeOverflow,
		"bad_request": CodeBadRequest, "failed": CodeFailed, "cancelled": CodeCancelled,
	}, map[string]string{
		"protocol": "protocol", "version": "version", "permission": "permission",
		"no_service": "no_service", "terminated": "terminated", "no_method": "no_method",
		"no_device": "no_device", "closed": "closed", "overflow": "overflow",
		"bad_request": "bad_request", "failed": "failed", "cancelled": "cancelled",
	})
}

// A RemoteError reads as the peer's message, without a prefix: the peer
// already said what happened.
func TestRemoteErrorText(t *testing.T) {
	require.Equal(t, "no such service", (&RemoteError{Code: CodeNoService, Message: "no such service"}).Error())
	require.Equal(t, "no such service", (&RemoteError{Code: CodeNoService}).Error())
	require.Equal(t, "error code weird", (&RemoteError{Code: "weird"}).Error())
	require.NotErrorIs(t, &RemoteError{Code: "weird"}, ErrProtocol)
}

func TestMatchString(t *testing.T) {
	for _, tc := range []struct {
		m    Match
		want string
	}{
		{Match{Personality: "nosuch"}, "personality=nosuch"},
		{Match{ID: 7, Class: "SCSIDevice", Name: "sda"}, "id=7 class=SCSIDevice name=sda"},
		{Match{Class: "X", Properties: map[string]string{"vendor": "QEMU", "b": "two words", "a": ""}}, `class=X a="" b="two words" vendor=QEMU`},
		{Match{Name: "a\"b\n"}, `name="a\"b\n"`},
		{Match{}, "(empty match)"},
	} {
		require.Equal(t, tc.want, tc.m.String())
	}
}

// FuzzDecodeFrame: the decoder never panics, accepts only what re-encodes to
// the same bytes, and agrees with the stream decoder.
func FuzzDecodeFrame(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/frames/*.bin")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		const max = 4096
		fr, n, err := DecodeFrame(b, max)
		sfr, serr := NewDecoder(bytes.NewReader(b), max).ReadFrame()
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v does not match ErrProtocol", err)
			}
			if serr == nil {
				t.Fatalf("stream decoder accepted what DecodeFrame refused: %v", err)
			}
			return
		}
		if serr != nil {
			t.Fatalf("stream decoder refused what DecodeFrame accepted: %v", serr)
		}
		re, err := AppendFrame(nil, &fr, max)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", re, b[:n])
		}
		if fr.Type != sfr.Type || fr.ID != sfr.ID || !bytes.Equal(fr.Control, sfr.Control) || !bytes.Equal(fr.Data, sfr.Data) {
			t.Fatalf("decoders disagree: %+v vs %+v", fr, sfr)
		}
		// The same bytes arriving one at a time.
		ofr, oerr := NewDecoder(iotest.OneByteReader(bytes.NewReader(b)), max).ReadFrame()
		if oerr != nil || ofr.Type != fr.Type || ofr.ID != fr.ID || !bytes.Equal(ofr.Control, fr.Control) || !bytes.Equal(ofr.Data, fr.Data) {
			t.Fatalf("byte by byte: %+v, %v; whole: %+v", ofr, oerr, fr)
		}
	})
}

func TestSeedsPresent(t *testing.T) {
	seeds, err := filepath.Glob("testdata/frames/*.bin")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(seeds), 8, "seed corpus missing; run go test -run TestWriteSeeds -update-seeds")
}

func TestAppendNotification(t *testing.T) {
	for _, n := range []Notification{
		{Type: ServiceIsTerminated, Service: 7},
		{Type: "DriverDefined(0x1)", Data: []byte{0, 1, 2}},
		{Type: `odd "type"\`, Service: 1 << 63, Detail: "ünïcode\n\"quoted\"\x01"},
	} {
		b := AppendNotification([]byte("prefix"), 42, n)
		require.Equal(t, "prefix", string(b[:6]))
		f, used, err := DecodeFrame(b[6:], DefaultMaxFrame)
		require.NoError(t, err)
		require.Equal(t, len(b)-6, used)
		require.Equal(t, TypeNotification, f.Type)
		var m NotificationMsg
		require.NoError(t, json.Unmarshal(f.Control, &m))
		require.Equal(t, NotificationMsg{Handle: 42, Type: string(n.Type), Service: n.Service, Detail: n.Detail}, m)
		require.Equal(t, string(n.Data), string(f.Data))
	}
}

// stallReader delivers its bytes, then a non-EOF error, as a socket whose
// peer stopped sending would after a read deadline.
type stallReader struct{ b []byte }

var errStall = errors.New("stalled")

func (r *stallReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, errStall
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// A length prefix announcing the maximum followed by a few bytes costs
// memory for what arrived, not for what was announced.
func TestDecoderAllocatesAsBytesArrive(t *testing.T) {
	hdr := make([]byte, 24)
	binary.BigEndian.PutUint32(hdr, DefaultMaxFrame)
	hdr[4] = byte(TypePing)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	d := NewDecoder(&stallReader{b: hdr}, 0)
	_, err := d.ReadFrame()
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, errStall)
	allocated := after.TotalAlloc - before.TotalAlloc
	require.Less(t, allocated, uint64(64<<10), "a 1 MiB header with 20 bytes behind it allocated %d bytes", allocated)
	// The frame still decodes when its bytes do come, in pieces.
	f := Frame{Type: TypeCall, ID: 9, Control: []byte(`{}`), Data: bytes.Repeat([]byte("x"), 100<<10)}
	b, err := AppendFrame(nil, &f, DefaultMaxFrame)
	require.NoError(t, err)
	got, err := NewDecoder(iotest.OneByteReader(bytes.NewReader(b)), 0).ReadFrame()
	require.NoError(t, err)
	require.Equal(t, f.Data, got.Data)
}

// Frames on both sides of the read buffer's size (parsed where they lie,
// or copied into a body of their own) decode the same, one after another,
// whether they arrive whole or byte by byte; and when the stream stalls (a
// read deadline) in the middle of a frame that fits the buffer, nothing of
// it is consumed and the next call reads it whole.
func TestDecoderFramesAroundBufferSize(t *testing.T) {
	const bufSize = 8 << 10
	var stream, fitting []byte // all the frames; those that fit the buffer
	var want, wantFitting []Frame
	for _, size := range []int{0, 1, 100, bufSize - 4 - HeaderLen - 1, bufSize - 4 - HeaderLen, bufSize - 4 - HeaderLen + 1, bufSize, 3 * bufSize} {
		f := Frame{Type: TypeReply, ID: uint64(size + 1), Data: bytes.Repeat([]byte{byte(size)}, size)}
		if size == 0 {
			f.Data = nil
		}
		b, err := AppendFrame(nil, &f, DefaultMaxFrame)
		require.NoError(t, err)
		stream = append(stream, b...)
		want = append(want, f)
		if len(b) <= bufSize {
			fitting = append(fitting, b...)
			wantFitting = append(wantFitting, f)
		}
	}
	readAll := func(t *testing.T, d *Decoder, want []Frame, stall func() bool) {
		for i, w := range want {
			got, err := d.ReadFrame()
			for err != nil && errors.Is(err, errStall) && stall() {
				got, err = d.ReadFrame()
			}
			require.NoError(t, err, "frame %d", i)
			require.Equal(t, w.ID, got.ID)
			require.Equal(t, w.Data, got.Data, "frame %d (%d bytes)", i, len(w.Data))
		}
		_, err := d.ReadFrame()
		require.ErrorIs(t, err, io.EOF)
	}
	t.Run("whole", func(t *testing.T) {
		readAll(t, NewDecoder(bytes.NewReader(stream), 0), want, nil)
	})
	t.Run("byte by byte", func(t *testing.T) {
		readAll(t, NewDecoder(iotest.OneByteReader(bytes.NewReader(stream)), 0), want, nil)
	})
	t.Run("stalling", func(t *testing.T) {
		// 37-byte pieces, each followed by a stall.
		r := &pieceReader{rest: fitting, piece: 37}
		readAll(t, NewDecoder(r, 0), wantFitting, func() bool { r.stalled = false; return true })
	})
}

// pieceReader returns piece bytes, then errStall once, and so on, then
// io.EOF.
type pieceReader struct {
	rest    []byte
	piece   int
	stalled bool
}

func (r *pieceReader) Read(p []byte) (int, error) {
	if len(r.rest) == 0 {
		return 0, io.EOF
	}
	if r.stalled {
		return 0, errStall
	}
	n := copy(p[:min(len(p), r.piece)], r.rest)
	r.rest = r.rest[n:]
	r.stalled = true
	return n, nil
}

// A reader that returns its last bytes together with io.EOF, and one that
// returns nothing forever: frames still decode, then io.EOF; and
// io.ErrNoProgress instead of a spin.
func TestDecoderReaderEdges(t *testing.T) {
	f := Frame{Type: TypeReply, ID: 3, Data: []byte("last")}
	b, err := AppendFrame(nil, &f, DefaultMaxFrame)
	require.NoError(t, err)
	d := NewDecoder(iotest.DataErrReader(bytes.NewReader(append(b, b...))), 0)
	for range 2 {
		got, err := d.ReadFrame()
		require.NoError(t, err)
		require.Equal(t, f.Data, got.Data)
	}
	_, err = d.ReadFrame()
	require.ErrorIs(t, err, io.EOF)

	_, err = NewDecoder(emptyReader{}, 0).ReadFrame()
	require.ErrorIs(t, err, io.ErrNoProgress)
	_, err = NewDecoder(emptyReader{}, 0).Wait()
	require.ErrorIs(t, err, io.ErrNoProgress)
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

// badCountReader claims more than it was given room for.
type badCountReader struct{}

func (badCountReader) Read(p []byte) (int, error) { return len(p) + 1, nil }

// A reader that returns an impossible count is refused with an error, not
// trusted with the buffer's bounds.
func TestDecoderRefusesImpossibleCount(t *testing.T) {
	_, err := NewDecoder(badCountReader{}, 0).ReadFrame()
	require.ErrorIs(t, err, errImpossibleCount)
}
