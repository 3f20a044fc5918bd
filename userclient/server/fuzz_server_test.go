package server

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// fuzzFrames turns fuzz input into a byte stream for a live connection.
// The first byte picks the form: odd, the input is sent raw after a valid
// hello (the decoder, the limits and the handshake state at work); even,
// the rest is a sequence of frames [type][flags][id][control length]
// [control][data length][data], encoded with a correct length prefix
// (what the server does with well-framed requests of any content), after
// a hello unless the second byte is 0.
func fuzzFrames(in []byte) []byte {
	hello, _ := wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeHello, ID: 1,
		Control: []byte(`{"protocol":"drvkit-userclient","versions":[1,2]}`)}, wire.DefaultMaxFrame)
	if len(in) == 0 {
		return hello
	}
	if in[0]&1 == 1 {
		return append(hello, in[1:]...)
	}
	in = in[1:]
	var out []byte
	if len(in) > 0 && in[0] != 0 {
		out = hello
	}
	next := func(n int) []byte {
		n = min(n, len(in))
		b := in[:n]
		in = in[n:]
		return b
	}
	for len(in) >= 5 {
		h := next(5)
		ctl := next(int(h[3]))
		var data []byte
		if len(in) > 0 {
			data = next(int(next(1)[0]))
		}
		// The type, flags and reserved bytes as given: frames the encoder
		// would refuse are sent too.
		body := make([]byte, wire.HeaderLen, wire.HeaderLen+len(ctl)+len(data))
		body[0], body[1], body[2] = h[0]%16, h[1]&3, h[4]&1
		body[11] = h[2] // id
		body[15] = byte(len(ctl))
		body = append(append(body, ctl...), data...)
		n := len(body)
		out = append(out, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		out = append(out, body...)
	}
	return out
}

// FuzzServer drives a live server connection with arbitrary frame
// sequences, not just the decoder: after each input the connection ends
// within a bound (the server never hangs on it), every handle it opened
// is gone, and the server still serves a well-behaved client.
func FuzzServer(f *testing.F) {
	seeds := []string{
		`{"match":{"class":"TestDevice"}}`,
		`{"match":{"class":"NeverDevice"},"wait":true}`,
		`{"handle":1,"method":"echo"}`,
		`{"handle":1}`,
		`{"op":"inspect"}`,
	}
	for _, typ := range []wire.MsgType{wire.TypeOpen, wire.TypeOpen, wire.TypeCall, wire.TypeClose, wire.TypeAdmin} {
		for _, s := range seeds {
			in := []byte{0, 1, byte(typ), 0, 2, byte(len(s)), 0}
			in = append(in, s...)
			in = append(in, 4, 'e', 'c', 'h', 'o')
			f.Add(in)
		}
	}
	open := `{"match":{"class":"TestDevice"}}`
	call := `{"handle":1,"method":"echo"}`
	seq := []byte{0, 1, byte(wire.TypeOpen), 0, 2, byte(len(open)), 0}
	seq = append(seq, open...)
	seq = append(seq, 0, byte(wire.TypeCall), 0, 3, byte(len(call)), 0)
	seq = append(seq, call...)
	seq = append(seq, 2, 'h', 'i', byte(wire.TypeCancel), 0, 3, 0, 0)
	f.Add(seq)
	f.Add([]byte{1, 0, 0x10, 0, 0}) // a header announcing 1 MiB, then nothing
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})

	ts := newTestServer(f, Config{Limits: Limits{FrameTimeout: 100 * time.Millisecond, IdleTimeout: time.Second}, HandshakeTimeout: 200 * time.Millisecond})
	good := ts.dial(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		nc, err := net.Dial("unix", ts.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		uc := nc.(*net.UnixConn)
		if _, err := uc.Write(fuzzFrames(in)); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatal(err)
		}
		uc.CloseWrite()
		// The server ends the connection: EOF (or a reset) within a bound.
		uc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64<<10)
		for {
			_, err := uc.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the server did not end the connection")
			}
			if err != nil {
				break
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			st := ts.Stats()
			if st.Sessions == 0 && st.Conns == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the connection ended: %+v (want no session, only the good client)", st)
			}
			time.Sleep(time.Millisecond)
		}
		if err := good.Ping(context.Background()); err != nil {
			t.Fatalf("the good client: %v", err)
		}
		h, err := good.Open(context.Background(), userclient.Match{Class: "TestDevice"})
		if err != nil {
			t.Fatalf("the good client: %v", err)
		}
		h.Close()
	})
}
