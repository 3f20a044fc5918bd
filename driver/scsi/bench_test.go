package scsi_test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkBOTRead measures READ throughput through the whole stack —
// scsi.Device, the BOT transport (CBW, data, CSW), the usbtest backend and
// its mass-storage device, the scsitest disk — against a plain memory copy
// of the same size timed in the same run: x-memcpy is how many times
// longer a BOT READ takes than copying its bytes.
func BenchmarkBOTRead(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			ctx := context.Background()
			r := newBOTRig(b, 4096) // 2 MiB disk
			src := make([]byte, size)
			for i := range src {
				src[i] = byte(i * 7)
			}
			if err := r.scsi.Write(ctx, 0, src); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, size)
			if _, err := r.scsi.Read(ctx, 0, buf); err != nil { // learn capacity, warm up
				b.Fatal(err)
			}

			// Baseline: the same bytes moved by copy, b.N times.
			dst := make([]byte, size)
			start := time.Now()
			for i := 0; i < b.N; i++ {
				copy(dst, src)
			}
			base := time.Since(start)

			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := r.scsi.Read(ctx, 0, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if base > 0 {
				b.ReportMetric(float64(b.Elapsed())/float64(base), "x-memcpy")
				b.ReportMetric(float64(size)*float64(b.N)/base.Seconds()/1e6, "memcpy-MB/s")
			}
		})
	}
}
