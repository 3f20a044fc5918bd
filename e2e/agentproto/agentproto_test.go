package agentproto

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecodeMessage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		resp  bool
		event bool
	}{
		{"ok response", `{"id":3,"ok":true,"result":{"udc":"dummy_udc.0"},"ms":1.5}`, true, false},
		{"failed response", `{"id":4,"ok":false,"error":"inquiry: no such device"}`, true, false},
		{"uevent", `{"event":"uevent","uevent":{"action":"add","devpath":"/devices/x","env":{"A":"b"},"sender_pid":0,"time_ns":1}}`, false, true},
		{"other event", `{"event":"log","data":"x"}`, false, true},
		{"failed without error", `{"id":4,"ok":false}`, false, false},
		{"both", `{"id":1,"ok":true,"event":"uevent"}`, false, false},
		{"neither", `{"ok":true}`, false, false},
		{"uevent without body", `{"event":"uevent"}`, false, false},
		{"negative id", `{"id":-1,"ok":true}`, false, false},
		{"not json", `E2E ready`, false, false},
		{"empty", ``, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeMessage([]byte(tc.in))
			if !tc.resp && !tc.event {
				require.ErrorIs(t, err, ErrMalformed)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.resp, m.Response != nil)
			require.Equal(t, tc.event, m.Event != nil)
		})
	}
}

func TestDecodeRequest(t *testing.T) {
	r, err := DecodeRequest([]byte(`{"id":9,"op":"sg.inquiry","args":{"device":"/dev/sg0"}}` + "\r\n"))
	require.NoError(t, err)
	require.Equal(t, uint64(9), r.ID)
	var a InquiryArgs
	require.NoError(t, json.Unmarshal(r.Args, &a))
	require.Equal(t, "/dev/sg0", a.Device)
	for _, bad := range []string{`{"id":1}`, `{"id":"x","op":"hello"}`, `hello`, `{`} {
		_, err := DecodeRequest([]byte(bad))
		require.ErrorIs(t, err, ErrMalformed, bad)
	}
}

// Every datagram of a real guest run parses, with the header agreeing with
// ACTION and DEVPATH.
func TestParseUeventCaptures(t *testing.T) {
	f, err := os.Open("testdata/qemu-uevents.b64")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	n, usbAdds := 0, 0
	for sc.Scan() {
		b, err := base64.StdEncoding.DecodeString(sc.Text())
		require.NoError(t, err)
		u, err := ParseUevent(b)
		require.NoError(t, err, "%q", b)
		require.Equal(t, u.Action, u.Get("ACTION"))
		require.NotZero(t, u.Seqnum)
		if u.Action == "add" && u.Get("DEVTYPE") == "usb_device" && u.Get("PRODUCT") == "46f4/1/0" {
			usbAdds++
		}
		n++
	}
	require.NoError(t, sc.Err())
	require.Equal(t, 213, n)
	require.Positive(t, usbAdds, "the capture has the stick's usb_device add")
}

func TestParseUeventRejects(t *testing.T) {
	for name, in := range map[string]string{
		"empty":           "",
		"no at":           "add\x00ACTION=add\x00",
		"empty devpath":   "add@\x00",
		"libudev":         "libudev\x00\xfe\xed\xca\xfe",
		"bad field":       "add@/x\x00NOEQUALS\x00",
		"action mismatch": "add@/x\x00ACTION=remove\x00",
		"path mismatch":   "add@/x\x00DEVPATH=/y\x00",
		"bad seqnum":      "add@/x\x00SEQNUM=12a\x00",
		"not utf-8":       "add@/x\x94\x00",
	} {
		_, err := ParseUevent([]byte(in))
		require.ErrorIs(t, err, ErrMalformed, name)
	}
}

func FuzzParseUevent(f *testing.F) {
	f.Add([]byte("change@/devices/virtual/block/loop42\x00ACTION=change\x00DEVPATH=/devices/virtual/block/loop42\x00SUBSYSTEM=block\x00SEQNUM=1\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := ParseUevent(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if u.Action == "" || u.Devpath == "" {
			t.Fatalf("parsed without action or devpath: %+v", u)
		}
		// What the guest sends, the host decodes.
		line, err := json.Marshal(Event{Event: "uevent", Uevent: u})
		if err != nil {
			t.Fatal(err)
		}
		m, err := DecodeMessage(line)
		if err != nil || m.Event == nil || m.Event.Uevent.Devpath != u.Devpath {
			t.Fatalf("round trip of %q: %v %+v", b, err, m)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(`{"id":3,"ok":true,"result":{"udc":"dummy_udc.0"},"ms":1.5}`))
	f.Add([]byte(`{"id":4,"ok":false,"error":"x"}`))
	f.Add([]byte(`{"event":"uevent","uevent":{"action":"add","devpath":"/d","env":{}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if (m.Response == nil) == (m.Event == nil) {
			t.Fatalf("exactly one of response and event must be set: %+v", m)
		}
		if m.Response != nil && !m.Response.OK && m.Response.Error == "" {
			t.Fatal("failed response without error")
		}
	})
}
