package qmp

import (
	"encoding/json"
	"testing"
	"time"
)

var benchEvent = []byte(`{"timestamp": {"seconds": 1763750000, "microseconds": 123456}, "event": "DEVICE_DELETED", "data": {"device": "usbstick", "path": "/machine/peripheral/usbstick"}}`)

// BenchmarkDecode measures decoding one event; the baseline is a plain
// json.Unmarshal of the same line into a map, reported as ratio-vs-map.
func BenchmarkDecode(b *testing.B) {
	b.ReportAllocs()
	var base time.Duration
	{
		t0 := time.Now()
		for range 2000 {
			var m map[string]any
			if err := json.Unmarshal(benchEvent, &m); err != nil {
				b.Fatal(err)
			}
		}
		base = time.Since(t0) / 2000
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := decode(benchEvent); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if base > 0 && b.N > 0 {
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(base), "ratio-vs-map")
	}
}
