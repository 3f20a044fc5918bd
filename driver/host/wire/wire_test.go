package wire_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/host/wire"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		nfds int
		err  string
	}{
		{"hello", `{"type":"hello","version":"1.0"}`, 0, ""},
		{"hello newer minor", `{"type":"hello","version":"1.7","future":true}`, 0, ""},
		{"hello bad version", `{"type":"hello","version":"one"}`, 0, `malformed message: version "one" is not MAJOR.MINOR`},
		{"not an object", `[1,2]`, 0, "malformed message: not a JSON object"},
		{"empty", ``, 0, "malformed message: not a JSON object"},
		{"no type", `{"id":1}`, 0, "malformed message: no type"},
		{"unknown type", `{"type":"reboot"}`, 0, `malformed message: unknown type "reboot"`},
		{"call", `{"type":"call","id":3,"method":"echo","data":"aGk="}`, 0, ""},
		{"call without id", `{"type":"call","method":"echo"}`, 0, "malformed message: call without an id"},
		{"call without method", `{"type":"call","id":3}`, 0, "malformed message: call without a method"},
		{"call with fds", `{"type":"call","id":3,"method":"x"}`, 1, "malformed message: call carries descriptors"},
		{"start", `{"type":"start","id":1,"personality":{"class":"C"},"nub":{"class":"N","properties":{"a":1}},"files":[{"resource":"hidraw","node":"/dev/hidraw0","kind":"hidraw"}]}`, 1, ""},
		{"start files mismatch", `{"type":"start","id":1,"personality":{"class":"C"},"nub":{"class":"N"}}`, 2, "malformed message: start lists 0 files but carries 2 descriptors"},
		{"start without nub", `{"type":"start","id":1}`, 0, "malformed message: start without nub or personality"},
		{"start with providers", `{"type":"start","id":1,"personality":{"class":"C"},"nub":{"class":"USBInterface","properties":{"bInterfaceNumber":0}},"providers":[{"id":4,"class":"USBDevice","name":"1-1","properties":{"busnum":1,"devnum":4},"types":{"busnum":"int","devnum":"int"}}]}`, 0, ""},
		{"start provider without class", `{"type":"start","id":1,"personality":{"class":"C"},"nub":{"class":"N"},"providers":[{"id":4}]}`, 0, "malformed message: start with a provider without a class"},
		{"start provider type without property", `{"type":"start","id":1,"personality":{"class":"C"},"nub":{"class":"N"},"providers":[{"class":"P","types":{"x":"int"}}]}`, 0, `malformed message: type of property "x" that is not there`},
		{"start too many providers", `{"type":"start","id":1,"personality":{"class":"C"},"nub":{"class":"N"},"providers":[` + strings.TrimSuffix(strings.Repeat(`{"class":"P"},`, wire.MaxProviders+1), ",") + `]}`, 0, "malformed message: start with 9 providers (at most 8)"},
		{"start type without property", `{"type":"start","id":1,"personality":{"class":"C"},"nub":{"class":"N","types":{"x":"int"}}}`, 0, `malformed message: type of property "x" that is not there`},
		{"notify", `{"type":"notify","to":"clients","msg":65537}`, 0, ""},
		{"notify forged", `{"type":"notify","to":"clients","msg":1}`, 0, "malformed message: notify of message 1: drivers may send only their own types (from 0x10000)"},
		{"notify nowhere", `{"type":"notify","to":"world","msg":65537}`, 0, `malformed message: notify to "world" (want "clients" or "interest")`},
		{"log", `{"type":"log","level":"warn","text":"x"}`, 0, ""},
		{"log level", `{"type":"log","level":"shout"}`, 0, `malformed message: log level "shout"`},
		{"error", `{"type":"error","code":"failed","text":"x"}`, 0, ""},
		{"error no code", `{"type":"error","id":2}`, 0, "malformed message: error without a code"},
		{"result no id", `{"type":"result"}`, 0, "malformed message: result without an id"},
		{"bad json", `{"type":"call",`, 0, "malformed message: unexpected end of JSON input"},
		{"wrong field type", `{"type":"call","id":"x"}`, 0, "malformed message: json: cannot unmarshal string into Go struct field Message.id of type uint64"},
		{"too many fds", `{"type":"stop","id":1}`, 17, "malformed message: 17 descriptors (at most 16)"},
		{"leaks", `{"type":"leaks","leaks":{"objects":2,"text":"x","culprit":{"func":"a.F","file":"a/f.go","line":3},"stack":[{"func":"a.F"}]}}`, 0, ""},
		{"leaks without report", `{"type":"leaks"}`, 0, "malformed message: leaks without a report"},
		{"leaks of nothing", `{"type":"leaks","leaks":{"objects":0}}`, 0, "malformed message: leaks report of 0 objects"},
		{"leaks frame without func", `{"type":"leaks","leaks":{"objects":1,"culprit":{"file":"a.go","line":1}}}`, 0, `malformed message: leaks report frame "" "a.go":1`},
		{"leaks elsewhere", `{"type":"log","text":"x","leaks":{"objects":1}}`, 0, "malformed message: log carries a leaks report"},
		{"leaks with fds", `{"type":"leaks","leaks":{"objects":1}}`, 1, "malformed message: leaks carries descriptors"},
		{"long text", `{"type":"log","text":"` + strings.Repeat("x", 5000) + `"}`, 0, "malformed message: log has a text of 5000 bytes (at most 4096)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := wire.Decode([]byte(tc.in), tc.nfds)
			if tc.err != "" {
				require.EqualError(t, err, tc.err)
				require.ErrorIs(t, err, wire.ErrMalformed)
				require.Nil(t, m)
				return
			}
			require.NoError(t, err)
			require.NotEmpty(t, m.Type)
		})
	}
	_, err := wire.Decode(make([]byte, wire.MaxMessage+1), 0)
	require.ErrorIs(t, err, wire.ErrTooLarge)
	_, err = wire.Encode(&wire.Message{Type: wire.TypeResult, ID: 1, Data: make([]byte, wire.MaxData+1)}, 0)
	require.ErrorIs(t, err, wire.ErrTooLarge)
}

func TestVersion(t *testing.T) {
	require.NoError(t, wire.CheckVersion("1.0"))
	require.NoError(t, wire.CheckVersion("1.12"))
	err := wire.CheckVersion("2.0")
	require.ErrorIs(t, err, wire.ErrVersion)
	require.EqualError(t, err, "protocol version mismatch: the peer speaks 2.0, this side 1.3")
	require.ErrorIs(t, wire.CheckVersion("1"), wire.ErrMalformed)
	require.ErrorIs(t, wire.CheckVersion("-1.0"), wire.ErrMalformed)
}

func TestDirections(t *testing.T) {
	for _, typ := range []string{wire.TypeStart, wire.TypeStop, wire.TypeCall, wire.TypeMessage, wire.TypeWillTerminate, wire.TypeDidTerminate, wire.TypeCancel} {
		require.True(t, wire.FromDaemon(typ), typ)
		require.False(t, wire.FromDriver(typ), typ)
	}
	for _, typ := range []string{wire.TypeNotify, wire.TypeLog, wire.TypeTerminate} {
		require.True(t, wire.FromDriver(typ), typ)
		require.False(t, wire.FromDaemon(typ), typ)
	}
	for _, typ := range []string{wire.TypeHello, wire.TypeResult, wire.TypeError} {
		require.True(t, wire.FromDriver(typ) && wire.FromDaemon(typ), typ)
	}
}

// TestProperties: what the daemon's nub holds is what the driver's mirror
// holds, types included.
func TestProperties(t *testing.T) {
	in := map[string]any{
		"idVendor": uint64(0x1209), "bInterfaceClass": uint8(3), "count": 7, "neg": int64(-5),
		"name": "kbd", "removable": true, "desc": []byte{0, 1, 0xff}, "ratio": 0.5,
		"big": uint64(1<<64 - 1), "odd": struct{ A int }{3},
	}
	vals, types := wire.EncodeProperties(in)
	b, err := json.Marshal(&wire.Message{Type: wire.TypeStart, ID: 1, Personality: &wire.Personality{Class: "C"}, Nub: &wire.Nub{Class: "N", Properties: vals, Types: types}})
	require.NoError(t, err)
	m, err := wire.Decode(b, 0)
	require.NoError(t, err)
	out, err := wire.DecodeProperties(m.Nub)
	require.NoError(t, err)
	want := map[string]any{}
	for k, v := range in {
		want[k] = v
	}
	want["odd"] = "{3}"
	require.Equal(t, want, out)

	// A driver in another language may leave the types out.
	out, err = wire.DecodeProperties(&wire.Nub{Properties: map[string]json.RawMessage{"a": []byte("12"), "b": []byte(`"x"`), "c": []byte("1.5"), "d": []byte("18446744073709551615")}})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"a": int64(12), "b": "x", "c": 1.5, "d": uint64(1<<64 - 1)}, out)
	_, err = wire.DecodeProperties(&wire.Nub{Properties: map[string]json.RawMessage{"a": []byte("300")}, Types: map[string]string{"a": "uint8"}})
	require.ErrorIs(t, err, wire.ErrMalformed)
	_, err = wire.DecodeProperties(&wire.Nub{Properties: map[string]json.RawMessage{"a": []byte("[1]")}})
	require.ErrorIs(t, err, wire.ErrMalformed)
}

// FuzzDecode: any bytes with any count of descriptors decode to a message
// or an error that says it is malformed or too large; never a panic. A
// message that decodes encodes again, and that decodes and encodes to the
// same bytes; its
// properties decode or are refused as malformed (seeds: testdata/*.json
// and testdata/fuzz/FuzzDecode).
func FuzzDecode(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*.json")
	require.NoError(f, err)
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		require.NoError(f, err)
		nfds := 0
		if base := filepath.Base(s); strings.Contains(base, "start") || base == "channel.json" {
			nfds = 1
		}
		f.Add(b, nfds)
	}
	f.Fuzz(func(t *testing.T, b []byte, nfds int) {
		m, err := wire.Decode(b, nfds)
		if err != nil {
			require.Nil(t, m)
			if !errorIsOne(err, wire.ErrMalformed, wire.ErrTooLarge, wire.ErrVersion) {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		again, err := wire.Encode(m, nfds)
		if err != nil {
			require.ErrorIs(t, err, wire.ErrTooLarge) // re-encoding may grow (escapes)
			return
		}
		m2, err := wire.Decode(again, nfds)
		require.NoError(t, err)
		// Compared as encoded: an empty map or list decodes to itself
		// but encodes as nothing (omitempty), then decodes to nil.
		again2, err := wire.Encode(m2, nfds)
		require.NoError(t, err)
		require.Equal(t, string(again), string(again2))
		if m.Nub != nil {
			if _, err := wire.DecodeProperties(m.Nub); err != nil {
				require.ErrorIs(t, err, wire.ErrMalformed)
			}
		}
		for i := range m.Providers {
			if _, err := wire.DecodeProperties(&m.Providers[i]); err != nil {
				require.ErrorIs(t, err, wire.ErrMalformed)
			}
		}
	})
}

func errorIsOne(err error, targets ...error) bool {
	for _, t := range targets {
		if errorsIs(err, t) {
			return true
		}
	}
	return false
}

func TestMessageData(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want string
	}{
		{nil, ""},
		{[]byte("raw"), "raw"},
		{"text", "text"},
		{errors.New("gone"), "gone"},
		{map[string]int{"n": 1}, `{"n":1}`},
	} {
		got, err := wire.MessageData(tc.in)
		require.NoError(t, err)
		require.Equal(t, tc.want, string(got))
	}
	_, err := wire.MessageData(make(chan int))
	require.Error(t, err, "what JSON cannot say is an error, not a panic")
}
