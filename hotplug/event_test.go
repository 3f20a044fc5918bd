package hotplug

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestParseCorpus parses every real datagram and compares it with the
// decoded text of the same capture.
func TestParseCorpus(t *testing.T) {
	raw := loadCorpus(t)
	dec := loadDecoded(t)
	// The shared README says 212; both files hold 213 events.
	require.Equal(t, 213, len(raw))
	require.Equal(t, len(raw), len(dec))
	for i, b := range raw {
		ev, err := Parse(b)
		require.NoError(t, err, "datagram %d", i)
		require.Equal(t, dec[i].header, ev.Action.String()+"@"+ev.DevPath, "datagram %d", i)
		var env []string
		for k, v := range ev.Env() {
			env = append(env, k+"="+v)
		}
		require.Equal(t, dec[i].env, env, "datagram %d", i)
		require.Equal(t, ev.Get("SUBSYSTEM"), ev.Subsystem)
		require.Equal(t, ev.Get("DEVTYPE"), ev.DevType)
		require.Equal(t, ev.Get("DRIVER"), ev.Driver)
		require.Equal(t, ev.Get("SEQNUM"), fmt.Sprint(ev.Seqnum))
		// Round trip to the wire format is byte-exact.
		out, err := ev.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, b, out, "datagram %d", i)
	}
}

// TestViewsGolden renders the typed view of every event of the corpus and
// compares with testdata/uevents/views.golden.
func TestViewsGolden(t *testing.T) {
	var sb strings.Builder
	for _, b := range loadCorpus(t) {
		ev, err := Parse(b)
		require.NoError(t, err)
		var v any
		switch {
		case ev.Subsystem == "usb" && ev.DevType == "usb_device":
			v, err = ev.USBDevice()
		case ev.Subsystem == "usb" && ev.DevType == "usb_interface":
			v, err = ev.USBInterface()
		case ev.Subsystem == "scsi" && ev.DevType == "scsi_device":
			v, err = ev.SCSIDevice()
		case ev.Subsystem == "scsi_generic":
			v, err = ev.SCSIGeneric()
		case ev.Subsystem == "block":
			v, err = ev.Block()
		default:
			continue
		}
		require.NoError(t, err, "%v", ev)
		fmt.Fprintf(&sb, "%d %s %+v\n", ev.Seqnum, ev, v)
	}
	const golden = "testdata/uevents/views.golden"
	if *update {
		require.NoError(t, os.WriteFile(golden, []byte(sb.String()), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, string(want), sb.String())
}

func TestViewsDecode(t *testing.T) {
	raw := loadCorpus(t)
	find := func(seq uint64) Event {
		for _, b := range raw {
			ev, err := Parse(b)
			require.NoError(t, err)
			if ev.Seqnum == seq {
				return ev
			}
		}
		t.Fatalf("seqnum %d not in corpus", seq)
		return Event{}
	}
	ev := find(746)
	d, err := ev.USBDevice()
	require.NoError(t, err)
	require.Equal(t, USBDevice{Port: "2-2", BusNum: 2, DevNum: 3, Vendor: 0x46f4, Product: 0x0001, DevName: "bus/usb/002/003"}, d)
	_, err = ev.SCSIDevice()
	require.ErrorIs(t, err, ErrNotApplicable)

	ev = find(747)
	in, err := ev.USBInterface()
	require.NoError(t, err)
	require.Equal(t, USBInterface{Name: "2-2:1.0", DevicePath: "/devices/pci0000:00/0000:00:02.0/usb2/2-2",
		Configuration: 1, Number: 0, Class: 8, SubClass: 6, Protocol: 0x50, Vendor: 0x46f4, Product: 1}, in)

	ev = find(754)
	sd, err := ev.SCSIDevice()
	require.NoError(t, err)
	require.Equal(t, SCSIDevice{HCTL: HCTL{1, 0, 0, 0}, Type: 0}, sd)

	ev = find(757)
	sg, err := ev.SCSIGeneric()
	require.NoError(t, err)
	require.Equal(t, "/dev/sg1", sg.DevNode)
	require.Equal(t, HCTL{1, 0, 0, 0}, sg.HCTL)
	require.Equal(t, 21, sg.Major)

	ev = find(761)
	bl, err := ev.Block()
	require.NoError(t, err)
	require.Equal(t, Block{Name: "sdb", DevNode: "/dev/sdb", DevType: "disk", Major: 8, Minor: 16, DiskSeq: 3}, bl)
}

func TestParseErrors(t *testing.T) {
	good := "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=block\x00SEQNUM=7\x00"
	_, err := ParseString(good)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "empty datagram"},
		{"no NUL", "add@/devices/x", "not NUL-terminated"},
		{"no at", "add/devices/x\x00", "no '@'"},
		{"unknown action", "explode@/devices/x\x00", `unknown action "explode"`},
		{"relative path", "add@devices\x00", "does not start with '/'"},
		{"libudev", "libudev\x00\xfe\xed\xca\xfe", "libudev monitor message"},
		{"not kv", "add@/x\x00ACTION=add\x00junk\x00", `"junk" is not KEY=VALUE`},
		{"empty key", "add@/x\x00=v\x00", "is not KEY=VALUE"},
		{"action mismatch", "add@/x\x00ACTION=remove\x00DEVPATH=/x\x00SUBSYSTEM=s\x00", "disagrees with header"},
		{"devpath mismatch", "add@/x\x00ACTION=add\x00DEVPATH=/y\x00SUBSYSTEM=s\x00", "DEVPATH disagrees"},
		{"missing action", "add@/x\x00DEVPATH=/x\x00SUBSYSTEM=s\x00", "(ACTION): missing"},
		{"missing devpath", "add@/x\x00ACTION=add\x00SUBSYSTEM=s\x00", "(DEVPATH): missing"},
		{"missing subsystem", "add@/x\x00ACTION=add\x00DEVPATH=/x\x00", "(SUBSYSTEM): missing"},
		{"bad seqnum", "add@/x\x00ACTION=add\x00DEVPATH=/x\x00SUBSYSTEM=s\x00SEQNUM=12a\x00", "not a decimal number"},
		{"hole", "add@/x\x00ACTION=add\x00\x00DEVPATH=/x\x00SUBSYSTEM=s\x00", "empty field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			require.ErrorIs(t, err, ErrMalformed)
			var pe *ParseError
			require.True(t, errors.As(err, &pe))
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestNewEvent(t *testing.T) {
	ev, err := NewEvent(ActionAdd, "/devices/virtual/block/loop9", "block", 12, "MAJOR=7", "MINOR=9", "DEVNAME=loop9", "DEVTYPE=disk")
	require.NoError(t, err)
	require.Equal(t, "disk", ev.DevType)
	require.Equal(t, uint64(12), ev.Seqnum)
	require.Equal(t, "loop9", ev.Name())
	b, _ := ev.MarshalBinary()
	require.Equal(t, "add@/devices/virtual/block/loop9\x00ACTION=add\x00DEVPATH=/devices/virtual/block/loop9\x00SUBSYSTEM=block\x00MAJOR=7\x00MINOR=9\x00DEVNAME=loop9\x00DEVTYPE=disk\x00SEQNUM=12\x00", string(b))
	_, err = NewEvent(ActionAdd, "nopath", "block", 0)
	require.ErrorIs(t, err, ErrMalformed)
}

func TestViewErrors(t *testing.T) {
	ev, err := NewEvent(ActionAdd, "/devices/usb1/1-1", "usb", 0, "DEVTYPE=usb_device", "PRODUCT=zz/1/0", "TYPE=0/0/0", "BUSNUM=1", "DEVNUM=2")
	require.NoError(t, err)
	_, err = ev.USBDevice()
	require.ErrorIs(t, err, ErrMalformed)
	require.Contains(t, err.Error(), "PRODUCT")
	ev, err = NewEvent(ActionAdd, "/devices/h/target0:0:0/0:0:x:0", "scsi", 0, "DEVTYPE=scsi_device")
	require.NoError(t, err)
	_, err = ev.SCSIDevice()
	require.ErrorIs(t, err, ErrMalformed)
	_, err = ParseHCTL("1:2:3")
	require.ErrorIs(t, err, ErrMalformed)
	h, err := ParseHCTL("1:2:3:4")
	require.NoError(t, err)
	require.Equal(t, "1:2:3:4", h.String())
}

func FuzzParse(f *testing.F) {
	for _, b := range loadCorpus(f) {
		f.Add(b)
	}
	f.Add([]byte("add@/x\x00ACTION=add\x00DEVPATH=/x\x00SUBSYSTEM=s\x00SEQNUM=1"))
	f.Add([]byte("libudev\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		// Views never panic, whatever the environment holds.
		_, _ = ev.USBDevice()
		_, _ = ev.USBInterface()
		_, _ = ev.SCSIDevice()
		_, _ = ev.SCSIGeneric()
		_, _ = ev.Block()
		_ = ev.Name()
		// A parsed event re-encodes to a datagram that parses to the same event.
		out, err := ev.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		ev2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-encoded event does not parse: %v", err)
		}
		if ev2 != ev {
			t.Fatalf("round trip changed the event: %+v != %+v", ev2, ev)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	corpus := loadCorpus(b)
	var bytes int
	for _, d := range corpus {
		bytes += len(d)
	}
	b.ReportAllocs()
	b.SetBytes(int64(bytes / len(corpus)))
	b.ResetTimer()
	n := 0
	for b.Loop() {
		ev, err := Parse(corpus[n%len(corpus)])
		if err != nil || ev.Subsystem == "" {
			b.Fatal(err)
		}
		n++
	}
	perEvent := b.Elapsed().Seconds() / float64(n)
	b.ReportMetric(1/perEvent, "events/s")
	b.ReportMetric(perEvent/copyBaseline(corpus), "x-copy")
}

// copyBaseline measures, in the same run, the seconds per event of only
// copying the datagram into a string — the floor for any parser that keeps
// the event. Parse's "x-copy" metric is its cost in multiples of that.
func copyBaseline(corpus [][]byte) float64 {
	const rounds = 2000
	var sink string
	start := time.Now()
	for i := range rounds * len(corpus) {
		sink = string(corpus[i%len(corpus)])
	}
	_ = sink
	return time.Since(start).Seconds() / float64(rounds*len(corpus))
}

// BenchmarkParseBaseline is the floor Parse is measured against: only the
// copy of the datagram into a string, which any parser keeping the event
// must do. Parse's overhead is its ns/op minus this one's.
func BenchmarkParseBaseline(b *testing.B) {
	corpus := loadCorpus(b)
	b.ReportAllocs()
	n := 0
	var sink string
	for b.Loop() {
		sink = string(corpus[n%len(corpus)])
		n++
	}
	_ = sink
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

func TestParseRejectsBadDevPaths(t *testing.T) {
	for _, tc := range []struct{ path, reason string }{
		{"/devices/../../etc", "'.' or '..' component"},
		{"/devices/x/..", "'.' or '..' component"},
		{"/devices/./x", "'.' or '..' component"},
		{"/devices//x", "empty component"},
		{"/devices/x/", "empty component"},
		{"/", "empty component"},
		{"/devices/x\x1b[31m", "control character"},
		{"/devices/x\x7f", "control character"},
	} {
		msg := "add@" + tc.path + "\x00ACTION=add\x00DEVPATH=" + tc.path + "\x00SUBSYSTEM=usb\x00SEQNUM=1\x00"
		_, err := Parse([]byte(msg))
		require.ErrorContains(t, err, tc.reason, "%q", tc.path)
	}
	for _, ok := range []string{"/devices/pci0000:00/0000:00:14.0/usb2/2-1", "/devices/virtual/block/loop9", "/d/...x/..a/.b"} {
		_, err := Parse([]byte("add@" + ok + "\x00ACTION=add\x00DEVPATH=" + ok + "\x00SUBSYSTEM=usb\x00"))
		require.NoError(t, err, ok)
	}
}
