package agentproto

import (
	"bytes"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"
)

// BenchmarkParseUevent parses every datagram of the real capture; the
// baseline only splits them at NULs, reported as ratio-vs-split.
func BenchmarkParseUevent(b *testing.B) {
	raw, err := os.ReadFile("testdata/qemu-uevents.b64")
	if err != nil {
		b.Fatal(err)
	}
	var msgs [][]byte
	for _, l := range strings.Fields(string(raw)) {
		m, err := base64.StdEncoding.DecodeString(l)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	b.ReportAllocs()
	t0 := time.Now()
	for range 200 {
		for _, m := range msgs {
			_ = bytes.Split(m, []byte{0})
		}
	}
	base := time.Since(t0) / 200
	b.ResetTimer()
	for b.Loop() {
		for _, m := range msgs {
			if _, err := ParseUevent(m); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(len(msgs)), "events/op")
	if base > 0 && b.N > 0 {
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(base), "ratio-vs-split")
	}
}
