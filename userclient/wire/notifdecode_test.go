package wire

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// checkNotificationDecode requires DecodeNotificationMsg to agree with
// encoding/json on b, and reports whether the fast path took it.
func checkNotificationDecode(t *testing.T, b []byte, lastType string) bool {
	t.Helper()
	var want NotificationMsg
	wantErr := json.Unmarshal(b, &want)
	got, err := DecodeNotificationMsg(b, lastType)
	if wantErr != nil {
		require.Error(t, err, "encoding/json refuses %q", b)
	} else {
		require.NoError(t, err, "encoding/json takes %q", b)
		require.Equal(t, want, got, "decoding %q", b)
	}
	fast, ok := parseNotificationMsg(b, lastType)
	if ok {
		require.NoError(t, wantErr, "fast path took %q, which encoding/json refuses", b)
		require.Equal(t, want, fast, "fast path on %q", b)
	}
	return ok
}

func TestDecodeNotificationMsg(t *testing.T) {
	for _, tc := range []struct {
		in   string
		fast bool
	}{
		{`{"handle":1,"type":"ServiceIsTerminated","service":7}`, true},
		{`{"handle":0,"type":""}`, true},
		{`{"handle":18446744073709551615,"type":"DriverDefined(0x1)","service":18446744073709551615,"detail":"x y"}`, true},
		{`{"handle":42,"type":"T","detail":""}`, true},
		{`{"handle":42,"type":"T","service":0}`, true},
		// Not AppendNotification's shape: encoding/json decides.
		{`{"handle":18446744073709551616,"type":"T"}`, false},
		{`{"handle":01,"type":"T"}`, false},
		{`{"handle":-1,"type":"T"}`, false},
		{`{"handle":1.0,"type":"T"}`, false},
		{`{"handle":1e2,"type":"T"}`, false},
		{`{"handle":1,"type":"\u0041"}`, false},
		{`{"handle":1,"type":"ü"}`, false},
		{"{\"handle\":1,\"type\":\"\xff\"}", false},
		{"{\"handle\":1,\"type\":\"a\x01\"}", false},
		{`{"type":"T","handle":1}`, false},
		{`{ "handle":1,"type":"T"}`, false},
		{`{"handle":1,"type":"T"} `, false},
		{`{"handle":1,"type":"T"}x`, false},
		{`{"handle":1,"type":"T","detail":"d","service":2}`, false},
		{`{"handle":1,"type":"T","service":2,"service":3}`, false},
		{`{"HANDLE":1,"type":"T"}`, false},
		{`{"handle":1,"type":"T","extra":true}`, false},
		{`{"handle":1,"type":"T"`, false},
		{`{"handle":1,"type":"T`, false},
		{`{"handle":,"type":"T"}`, false},
		{`{"handle":1,"type":null}`, false},
		{``, false},
		{`null`, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			require.Equal(t, tc.fast, checkNotificationDecode(t, []byte(tc.in), ""))
			checkNotificationDecode(t, []byte(tc.in), "T")
		})
	}
}

// TestDecodeNotificationMsgReusesType: a repeated type is the caller's
// string, not a new one.
func TestDecodeNotificationMsgReusesType(t *testing.T) {
	last := "DriverDefined(0x1)"
	m, err := DecodeNotificationMsg([]byte(`{"handle":3,"type":"DriverDefined(0x1)"}`), last)
	require.NoError(t, err)
	require.Equal(t, last, m.Type)
	in := []byte(`{"handle":3,"type":"DriverDefined(0x1)","service":9}`)
	require.Equal(t, 0.0, testing.AllocsPerRun(100, func() {
		_, _ = DecodeNotificationMsg(in, last)
	}))
	// A known cause is the package's string too: a termination reaches
	// every holder at once.
	in = []byte(`{"handle":3,"type":"DriverDefined(0x1)","service":9,"cause":"provider","root_cause":"unplug"}`)
	require.Equal(t, 0.0, testing.AllocsPerRun(100, func() {
		_, _ = DecodeNotificationMsg(in, last)
	}))
}

// TestNotificationRoundTrip: everything AppendNotification writes decodes
// to what it encoded, on the fast path when its strings need no escaping.
func TestNotificationRoundTrip(t *testing.T) {
	for _, n := range []Notification{
		{Type: ServiceIsTerminated, Service: 7},
		{Type: "DriverDefined(0x1)", Data: []byte("12")},
		{Type: ServiceWasClosed, Service: 1 << 63, Detail: "closed by client 9"},
		{Type: `odd "type"\`, Service: 1, Detail: "ünïcode\n\"quoted\"\x01"},
		{Type: ServiceIsTerminated, Service: 7, Cause: "provider", RootCause: "unplug"},
		{Type: ServiceIsRequestingClose, Service: 7, Cause: "admin", RootCause: "admin", Detail: "x"},
		{Type: ServiceIsTerminated, Cause: "a future cause"},
	} {
		checkNotificationRoundTrip(t, 99, n)
	}
}

func checkNotificationRoundTrip(t *testing.T, h uint64, n Notification) {
	t.Helper()
	b := AppendNotification(nil, h, n)
	f, _, err := DecodeFrame(b, 1<<30)
	require.NoError(t, err)
	m, err := DecodeNotificationMsg(f.Control, "")
	require.NoError(t, err)
	require.Equal(t, NotificationMsg{Handle: h, Type: jsonRoundTrip(string(n.Type)), Service: n.Service, Cause: jsonRoundTrip(n.Cause), RootCause: jsonRoundTrip(n.RootCause), Detail: jsonRoundTrip(n.Detail)}, m)
	if printableASCII(string(n.Type)) && printableASCII(n.Detail) && printableASCII(n.Cause) && printableASCII(n.RootCause) {
		_, ok := parseNotificationMsg(f.Control, "")
		require.True(t, ok, "fast path refused %q", f.Control)
	}
	checkNotificationDecode(t, f.Control, string(n.Type))
}

// jsonRoundTrip is s as encoding/json gives it back (invalid UTF-8
// becomes U+FFFD).
func jsonRoundTrip(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x80 || s[i] == '"' || s[i] == '\\' {
			return false
		}
	}
	return true
}

// FuzzDecodeNotificationMsg: the hand decoder agrees with encoding/json on
// any input (seeds: testdata/fuzz/FuzzDecodeNotificationMsg).
func FuzzDecodeNotificationMsg(f *testing.F) {
	f.Add([]byte(`{"handle":1,"type":"ServiceIsTerminated","service":7}`), "ServiceIsTerminated")
	f.Fuzz(func(t *testing.T, b []byte, lastType string) {
		checkNotificationDecode(t, b, lastType)
	})
}

// FuzzNotificationRoundTrip: what the server encodes, the client decodes
// back (seeds: testdata/fuzz/FuzzNotificationRoundTrip).
func FuzzNotificationRoundTrip(f *testing.F) {
	f.Add(uint64(1), "DriverDefined(0x1)", uint64(7), "", []byte("42"))
	f.Fuzz(func(t *testing.T, h uint64, typ string, service uint64, detail string, data []byte) {
		checkNotificationRoundTrip(t, h, Notification{Type: NotificationType(typ), Service: service, Detail: detail, Data: data})
	})
}
