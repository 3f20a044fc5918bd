package hotplug

import (
	"bufio"
	"encoding/base64"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// loadCorpus returns the raw datagrams captured in the QEMU guest.
func loadCorpus(tb testing.TB) [][]byte {
	tb.Helper()
	f, err := os.Open("testdata/uevents/qemu-uevents.b64")
	require.NoError(tb, err)
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(line)
		require.NoError(tb, err)
		out = append(out, b)
	}
	require.NoError(tb, sc.Err())
	return out
}

// decodedCorpus returns the events of qemu-uevents.txt: header and
// KEY=VALUE lines per event.
type decoded struct {
	header string
	env    []string
}

func loadDecoded(tb testing.TB) []decoded {
	tb.Helper()
	b, err := os.ReadFile("testdata/uevents/qemu-uevents.txt")
	require.NoError(tb, err)
	var out []decoded
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "#"), line == "":
		case strings.HasPrefix(line, "@ "):
			out = append(out, decoded{header: line[2:]})
		default:
			out[len(out)-1].env = append(out[len(out)-1].env, line)
		}
	}
	return out
}
