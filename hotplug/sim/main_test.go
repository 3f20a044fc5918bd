package sim_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// TestMain fails the test binary if goroutines (a waiting simulator, a
// bridge's publisher) or reference-counted objects are left behind.
func TestMain(m *testing.M) {
	leaktest.Main(m)
}

func drain(t *testing.T, s hotplug.Source) []hotplug.Event {
	t.Helper()
	var out []hotplug.Event
	for {
		ev, err := s.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out = append(out, ev)
	}
}

// corpus loads the datagrams captured in the QEMU guest.
func corpus(t *testing.T) [][]byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/uevents/qemu-uevents.b64")
	require.NoError(t, err)
	var out [][]byte
	for _, l := range strings.Fields(string(b)) {
		d, err := base64.StdEncoding.DecodeString(l)
		require.NoError(t, err)
		out = append(out, d)
	}
	return out
}
