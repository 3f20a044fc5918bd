package usbhold

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseState(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
	}{
		{"good", `{"version":1,"gated":["usb1","usb2"],"held":[{"interface":"2-1:1.0","bus":2,"address":3,"vendor":18164,"product":1,"personality":"usbstorage"}]}`, ""},
		{"empty", `{"version":1}`, ""},
		{"version", `{"version":2}`, "version 2"},
		{"not json", `gated=usb1`, "invalid character"},
		{"gated path", `{"version":1,"gated":["../usb1"]}`, "not a root hub"},
		{"gated twice", `{"version":1,"gated":["usb1","usb1"]}`, "twice"},
		{"held path", `{"version":1,"held":[{"interface":"../../drivers_probe","bus":2,"address":3}]}`, "not an interface name"},
		{"held bus", `{"version":1,"held":[{"interface":"2-1:1.0","bus":3,"address":3}]}`, "do not fit"},
		{"held address", `{"version":1,"held":[{"interface":"2-1:1.0","bus":2,"address":0}]}`, "do not fit"},
		{"held twice", `{"version":1,"held":[{"interface":"2-1:1.0","bus":2,"address":3},{"interface":"2-1:1.0","bus":2,"address":4}]}`, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseState([]byte(tc.in))
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrState)
			require.ErrorContains(t, err, tc.err)
		})
	}
}

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d", "usb-hold.json")
	st, err := ReadState(path)
	require.NoError(t, err, "missing is empty")
	require.True(t, st.empty())
	want := State{Version: stateVersion, Gated: []string{"usb2"}, Held: []Held{{Interface: "2-1:1.0", Bus: 2, Address: 3, Vendor: 0x46f4, Product: 1, Personality: "usbstorage"}}}
	require.NoError(t, writeState(path, want))
	got, err := ReadState(path)
	require.NoError(t, err)
	require.Equal(t, want, got)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.NoError(t, writeState(path, State{}))
	_, err = os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "an empty state leaves no file")
	require.NoError(t, os.Symlink("/etc/passwd", path))
	_, err = ReadState(path)
	require.ErrorIs(t, err, ErrState, "a planted symlink is not followed")
}

// FuzzParseState: a state that parses names only what a hold writes, and
// writes back to itself.
func FuzzParseState(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"gated":["usb1"],"held":[{"interface":"2-1:1.0","bus":2,"address":3,"vendor":18164,"product":1}]}`,
		`{"version":1}`, `{}`, `[]`, `{"version":1,"gated":["usb1","usb1"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(b)
		if err != nil {
			return
		}
		for _, g := range st.Gated {
			if _, ok := rootHubBus(g); !ok {
				t.Fatalf("gated %q", g)
			}
		}
		for _, h := range st.Held {
			if bus, _, ok := interfaceBus(h.Interface); !ok || bus != h.Bus {
				t.Fatalf("held %+v", h)
			}
		}
		path := filepath.Join(t.TempDir(), "s.json")
		if err := writeState(path, st); err != nil {
			t.Fatal(err)
		}
		back, err := ReadState(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(back.Gated) != len(st.Gated) || len(back.Held) != len(st.Held) {
			t.Fatalf("round trip %+v → %+v", st, back)
		}
	})
}
