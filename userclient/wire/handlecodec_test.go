package wire

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// checkHandleDecode requires DecodeHandleMsg to agree with encoding/json on
// b, and reports whether the fast path took it.
func checkHandleDecode(t *testing.T, b []byte, lastMethod string) bool {
	t.Helper()
	var want HandleMsg
	wantErr := json.Unmarshal(b, &want)
	got, err := DecodeHandleMsg(b, lastMethod)
	if wantErr != nil {
		require.Error(t, err, "encoding/json refuses %q", b)
	} else {
		require.NoError(t, err, "encoding/json takes %q", b)
		require.Equal(t, want, got, "decoding %q", b)
	}
	fast, ok := parseHandleMsg(b, lastMethod)
	if ok {
		require.NoError(t, wantErr, "fast path took %q, which encoding/json refuses", b)
		require.Equal(t, want, fast, "fast path on %q", b)
	}
	return ok
}

func TestDecodeHandleMsg(t *testing.T) {
	for _, tc := range []struct {
		in   string
		fast bool
	}{
		{`{"handle":1,"method":"read"}`, true},
		{`{"handle":1}`, true},
		{`{"handle":0,"method":""}`, true},
		{`{"handle":18446744073709551615,"method":"echo"}`, true},
		// Not AppendHandleMsg's shape: encoding/json decides.
		{`{"handle":18446744073709551616,"method":"echo"}`, false},
		{`{"handle":01}`, false},
		{`{"handle":-1}`, false},
		{`{"handle":1.5}`, false},
		{`{"method":"echo","handle":2}`, false},
		{`{ "handle":1 }`, false},
		{`{"handle":1,"method":"e\"cho"}`, false},
		{`{"handle":1,"method":"\u00e9"}`, false},
		{"{\"handle\":1,\"method\":\"\xff\"}", false},
		{`{"handle":1,"method":"echo","extra":true}`, false},
		{`{"handle":1,"handle":2}`, false},
		{`{"HANDLE":3}`, false},
		{`{"handle":1}x`, false},
		{`{"handle":1`, false},
		{`null`, false},
		{``, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			require.Equal(t, tc.fast, checkHandleDecode(t, []byte(tc.in), "echo"))
		})
	}
}

func TestDecodeHandleMsgReusesMethod(t *testing.T) {
	last := "echo"
	m, err := DecodeHandleMsg([]byte(`{"handle":1,"method":"echo"}`), last)
	require.NoError(t, err)
	require.Equal(t, last, m.Method)
	b := []byte(`{"handle":1,"method":"echo"}`)
	require.Equal(t, 0., testing.AllocsPerRun(100, func() {
		_, _ = DecodeHandleMsg(b, last)
	}))
}

func TestAppendHandleMsg(t *testing.T) {
	for _, m := range []HandleMsg{
		{Handle: 1, Method: "read"},
		{Handle: 7},
		{Handle: 1<<64 - 1, Method: "x y"},
		{Handle: 2, Method: `quo"te\ and <html> & é`},
		{Handle: 3, Method: "bad \xff utf-8"},
	} {
		checkHandleRoundTrip(t, m)
	}
}

func checkHandleRoundTrip(t *testing.T, m HandleMsg) {
	t.Helper()
	b := AppendHandleMsg(nil, m)
	require.True(t, json.Valid(b), "%q", b)
	got, err := DecodeHandleMsg(b, "")
	require.NoError(t, err)
	require.Equal(t, HandleMsg{Handle: m.Handle, Method: jsonRoundTrip(m.Method)}, got)
	// The same as json.Marshal gives, once decoded.
	ref, err := json.Marshal(m)
	require.NoError(t, err)
	var want HandleMsg
	require.NoError(t, json.Unmarshal(ref, &want))
	require.Equal(t, want, got)
	if printableASCII(m.Method) {
		_, ok := parseHandleMsg(b, "")
		require.True(t, ok, "fast path refused %q", b)
	}
	checkHandleDecode(t, b, m.Method)
}

// FuzzDecodeHandleMsg: the hand decoder agrees with encoding/json on any
// input (seeds: testdata/fuzz/FuzzDecodeHandleMsg).
func FuzzDecodeHandleMsg(f *testing.F) {
	f.Add([]byte(`{"handle":1,"method":"read"}`), "read")
	f.Fuzz(func(t *testing.T, b []byte, lastMethod string) {
		checkHandleDecode(t, b, lastMethod)
	})
}

// FuzzHandleMsgRoundTrip: what the client encodes, the server decodes back
// (seeds: testdata/fuzz/FuzzHandleMsgRoundTrip).
func FuzzHandleMsgRoundTrip(f *testing.F) {
	f.Add(uint64(1), "echo")
	f.Fuzz(func(t *testing.T, h uint64, method string) {
		checkHandleRoundTrip(t, HandleMsg{Handle: h, Method: method})
	})
}
