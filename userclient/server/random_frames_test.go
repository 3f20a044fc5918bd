package server

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

var randomFrames = flag.Int("userclient.randomframes", 1000, "connections of TestRandomFramesAfterHello (up to 4 random frames each)")

// randomBody returns the body (everything after the length field) of one
// frame of valid length, at one of three levels of plausibility: bytes
// alone; a well-formed header of a known type with random payloads; or a
// request of each type with control JSON close to what the server expects,
// its fields random.
func randomBody(r *rand.Rand) (body []byte, id uint64, level int) {
	id = r.Uint64N(1 << 20)
	level = r.IntN(3)
	if level == 0 {
		body = make([]byte, wire.HeaderLen+r.IntN(512))
		for i := range body {
			body[i] = byte(r.Uint32())
		}
		return body, binary.BigEndian.Uint64(body[4:]), level
	}
	typ := wire.MsgType(1 + r.IntN(int(wire.TypeCancel)))
	var ctl, data []byte
	if level == 1 {
		ctl = make([]byte, r.IntN(64))
		data = make([]byte, r.IntN(64))
		for i := range ctl {
			ctl[i] = byte(r.Uint32())
		}
		for i := range data {
			data[i] = byte(r.Uint32())
		}
	} else {
		word := func() string {
			return fmt.Sprintf("%q", []string{"TestDevice", "echo", "", "x\x00y", "inspect", "dev0", "\u00e9"}[r.IntN(7)])
		}
		num := func() string { return fmt.Sprint([]uint64{0, 1, 2, r.Uint64(), r.Uint64N(100)}[r.IntN(5)]) }
		bools := func() string { return []string{"true", "false", "null", "1"}[r.IntN(4)] }
		switch typ {
		case wire.TypeHello:
			ctl = []byte(`{"protocol":` + word() + `,"versions":[` + num() + `]}`)
		case wire.TypeOpen:
			ctl = []byte(`{"match":{"class":` + word() + `,"id":` + num() + `,"name":` + word() + `},"wait":` + bools() + `}`)
		case wire.TypeClose:
			ctl = []byte(`{"handle":` + num() + `}`)
		case wire.TypeCall:
			ctl = []byte(`{"handle":` + num() + `,"method":` + word() + `}`)
			data = []byte("payload")
		case wire.TypeAdmin:
			ctl = []byte(`{"op":` + word() + `,"args":{"id":` + num() + `}}`)
		case wire.TypePing:
			data = []byte("ping data")
		case wire.TypeCancel:
			// exactly its header: valid when id != 0
		default: // server-to-client types
			ctl = []byte(`{"handle":` + num() + `}`)
		}
		if r.IntN(8) == 0 && len(ctl) > 2 { // cut the JSON short now and then
			ctl = ctl[:r.IntN(len(ctl))]
		}
	}
	body = make([]byte, wire.HeaderLen, wire.HeaderLen+len(ctl)+len(data))
	body[0] = byte(typ)
	if level == 1 && r.IntN(4) == 0 {
		body[1] = byte(r.Uint32()) // flags, mostly unknown
	}
	binary.BigEndian.PutUint64(body[4:], id)
	binary.BigEndian.PutUint32(body[12:], uint32(len(ctl)))
	body = append(append(body, ctl...), data...)
	return body, id, level
}

// readOutcome reads until the connection's fate after a random frame and
// the ping that followed it: "fatal CODE" or "alive". Answers come in
// completion order: one to any request sent so far (sent) may come first.
func readOutcome(t *testing.T, d *wire.Decoder, sent map[uint64]bool, pingID uint64, what string, outcomes map[string]int) string {
	t.Helper()
	for {
		f, err := d.ReadFrame()
		require.NoError(t, err, "the connection ended without an error frame or the ping's answer: %s", what)
		switch {
		case f.Type == wire.TypeError && f.Flags&wire.FlagFatal != 0:
			var re *userclient.RemoteError
			require.ErrorAs(t, wire.DecodeError(f.Control), &re, what)
			require.Contains(t, []string{wire.CodeProtocol, wire.CodeClosed}, re.Code, "%s: %v", what, re)
			_, err := d.ReadFrame()
			require.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "%s: after the fatal error: %v", what, err)
			outcomes["fatal "+re.Code]++
			return "fatal " + re.Code
		case f.ID == pingID:
			require.Equal(t, wire.TypeReply, f.Type, "%s: %v", what, wire.DecodeError(f.Control))
			require.Equal(t, "after", string(f.Data), what)
			outcomes["alive"]++
			return "alive"
		case sent[f.ID] && (f.Type == wire.TypeReply || f.Type == wire.TypeError):
			outcomes["answered "+f.Type.String()]++ // then the ping's answer
		case f.Type == wire.TypeNotification:
			// a random open that succeeded hears about its service
		default:
			t.Fatalf("%s: unexpected %v frame id %d", what, f.Type, f.ID)
		}
	}
}

// TestRandomFramesAfterHello sends, after a proper hello, frames of valid
// length and random content, each followed by a ping. Each frame
// must either end the connection with a fatal protocol error frame (then
// EOF), or leave it serving — answered or ignored, the ping answered after
// it. The daemon keeps serving another client throughout, and at the end no
// connection, session, goroutine or reference is left (leaktest, in
// newTestServer).
func TestRandomFramesAfterHello(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	good := ts.dial(t)
	gh, err := good.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)

	const seed = 7
	r := rand.New(rand.NewPCG(seed, 0))
	hello := rawFrame(t, wire.TypeHello, 1, `{"protocol":"drvkit-userclient","versions":[2,1]}`, nil)
	outcomes := map[string]int{}
	for i := range *randomFrames {
		nc, err := net.Dial("unix", ts.sock)
		require.NoError(t, err)
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = nc.Write(hello)
		require.NoError(t, err)
		d := wire.NewDecoder(nc, 0)
		w, err := d.ReadFrame()
		require.NoError(t, err)
		require.Equal(t, wire.TypeWelcome, w.Type)
		sent := map[uint64]bool{}
		// Up to four frames on one connection, so that one can act on
		// what an earlier one did (a call on a handle a random open got).
		for j := 0; j < 4; j++ {
			body, id, level := randomBody(r)
			pingID := uint64(1<<40 + i*4 + j)
			frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
			frame = append(frame, body...)
			what := fmt.Sprintf("seed %d connection %d frame %d level %d: % x", seed, i, j, level, frame)
			_, err = nc.Write(frame)
			require.NoError(t, err, "the connection was closed after the ping's answer: %s", what)
			sent[id] = true
			// The server may already have closed: then the ping's write
			// fails or is never read, and the fatal error frame says why.
			_, _ = nc.Write(rawFrame(t, wire.TypePing, pingID, "", []byte("after")))
			if outcome := readOutcome(t, d, sent, pingID, what, outcomes); outcome != "alive" {
				break
			}
		}
		nc.Close()
		if i%50 == 0 {
			msg := fmt.Sprint("after connection ", i)
			out, err := gh.Call(ctx, "echo", []byte(msg))
			require.NoError(t, err)
			require.Equal(t, msg, string(out))
		}
	}
	t.Logf("outcomes on %d connections (seed %d): %v", *randomFrames, seed, outcomes)
	if *randomFrames >= 100 {
		// Both ends of the generator are exercised: frames the server
		// refuses and frames it serves (or ignores) on a live connection.
		require.Greater(t, outcomes["fatal protocol"], *randomFrames/10)
		require.Greater(t, outcomes["alive"], *randomFrames/10)
		require.Greater(t, outcomes["answered reply"]+outcomes["answered error"], *randomFrames/10)
	}
	out, err := gh.Call(ctx, "echo", []byte("still serving"))
	require.NoError(t, err)
	require.Equal(t, "still serving", string(out))
	require.Eventually(t, func() bool { return ts.Stats().Conns == 1 && ts.Stats().Sessions == 1 }, 10*time.Second, time.Millisecond,
		"every random connection ends with its sessions: %+v", ts.Stats())
	require.NoError(t, gh.Close())
}

// A frame whose control payload does not parse ends the connection before
// any frame behind it is served: the pings sent right after it are never
// answered (the payload is decoded before the request is dispatched).
func TestMalformedPayloadEndsConnectionFirst(t *testing.T) {
	ts := newTestServer(t, Config{})
	hello := rawFrame(t, wire.TypeHello, 1, helloJSON, nil)
	for _, typ := range []wire.MsgType{wire.TypeOpen, wire.TypeClose, wire.TypeCall, wire.TypeAdmin} {
		t.Run(typ.String(), func(t *testing.T) {
			for range 20 {
				nc := rawDial(t, ts.sock)
				msg := append([]byte(nil), hello...)
				msg = append(msg, rawFrame(t, typ, 2, `{"handle":`, nil)...)
				for id := uint64(3); id < 6; id++ {
					msg = append(msg, rawFrame(t, wire.TypePing, id, "", nil)...)
				}
				_, err := nc.Write(msg)
				require.NoError(t, err)
				nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				d := wire.NewDecoder(nc, 0)
				w, err := d.ReadFrame()
				require.NoError(t, err)
				require.Equal(t, wire.TypeWelcome, w.Type)
				f, err := d.ReadFrame()
				require.NoError(t, err)
				require.Equal(t, wire.TypeError, f.Type, "a ping behind the malformed frame was answered first: id %d", f.ID)
				require.Equal(t, wire.FlagFatal, f.Flags)
				require.ErrorContains(t, wire.DecodeError(f.Control), "bad "+typ.String()+" payload")
				_, err = d.ReadFrame()
				require.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "%v", err)
				nc.Close()
			}
		})
	}
}
