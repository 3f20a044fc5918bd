package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/drvkit/drvkit/refcount"

	"github.com/drvkit/drvkit/userclient"
)

// untraced runs a benchmark with reference tracing off (TestMain turns it
// on for the tests): objects made during it take the one-atomic path.
// untraced turns reference tracing off for the benchmark, including the
// objects newTestServer creates: leaktest.Check would otherwise turn it
// back on (it traces everything unless DRVKIT_REFTRACE says otherwise), and
// every benchmark here used to measure a fully traced registry.
func untraced(b *testing.B) {
	b.Setenv(refcount.EnvVar, "off")
	refcount.TraceOff()
	b.Cleanup(refcount.TraceAll)
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func reportLatencies(b *testing.B, lat []time.Duration) {
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
}

// BenchmarkCallRoundTrip: one call through the socket, the server, the user
// client and the driver's method, and back. The baseline is the same
// method called in process (driver.Service.Call) in the same run;
// x-direct is the ratio.
func BenchmarkCallRoundTrip(b *testing.B) {
	untraced(b)
	ts := newTestServer(b, Config{})
	ctx := context.Background()
	in := bytes.Repeat([]byte("x"), 64)

	// Baseline: the same method called in process (testing.Benchmark
	// cannot nest inside a benchmark, so it is timed by hand).
	const baseN = 20000
	start := time.Now()
	for range baseN {
		if _, err := ts.dev.Call(ctx, "echo", in); err != nil {
			b.Fatal(err)
		}
	}
	directNs := float64(time.Since(start).Nanoseconds()) / baseN
	for _, mode := range clientModes {
		b.Run(mode, func(b *testing.B) {
			c := ts.client(b, mode)
			h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := h.Call(ctx, "echo", in); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(per/1e3, "µs/call")
			b.ReportMetric(per/directNs, "x-direct")
		})
	}
}

// BenchmarkNotificationFanout: a driver message to 1,000 connected clients;
// latency until the last one has read it.
func BenchmarkNotificationFanout(b *testing.B) {
	// untraced: an embedding application's default; traced: the daemon's
	// (drvctl serve traces every class unless --trace says otherwise).
	b.Run("untraced", func(b *testing.B) { untraced(b); fanout(b) })
	b.Run("traced", func(b *testing.B) {
		b.Setenv(refcount.EnvVar, "all")
		refcount.TraceAll()
		fanout(b)
	})
}

func fanout(b *testing.B) {
	const clients = 1000
	ts := newTestServer(b, Config{})
	ctx := context.Background()
	var got sync.WaitGroup
	var readers sync.WaitGroup
	conns := make([]*userclient.Client, 0, clients)
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		readers.Wait()
	})
	for range clients {
		c, err := userclient.Dial(ctx, ts.sock)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
		if err != nil {
			b.Fatal(err)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for n := range h.Notifications() {
				if n.Type == driverMsgType {
					got.Done()
				}
			}
		}()
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got.Add(clients)
		start := time.Now()
		ts.dev.message(fmt.Appendf(nil, "%d", i))
		got.Wait()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportLatencies(b, lat)
}

// BenchmarkKillToFreed: a child process that opened a device is SIGKILLed;
// latency from the kill to the free of its user client. Runs at least 100
// trials (each trial spawns a process, so ns/op is the kill→freed mean).
func BenchmarkKillToFreed(b *testing.B) {
	untraced(b)
	ts := newTestServer(b, Config{})
	trials := max(b.N, 100)
	lat := make([]time.Duration, 0, trials)
	for range trials {
		ch := startChild(b, "", "open", ts.sock, nil)
		id := ch.opened(b)
		killed := ch.kill()
		freed := ts.reg.waitFreed(b, id)
		lat = append(lat, freed.Sub(killed))
		ch.cmd.Wait()
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	b.ReportMetric(float64(sum.Nanoseconds())/float64(len(lat)), "ns/op")
	b.ReportMetric(float64(len(lat)), "trials")
	reportLatencies(b, lat)
}

// BenchmarkCallCancel: a call that blocks in the driver, cancelled by the
// application once the method runs; one op lasts until the method has
// seen its context cancelled (call frame, method, cancel frame, method
// returns). x-call is the ratio to a plain echo call on the same
// connection, measured in the same run.
func BenchmarkCallCancel(b *testing.B) {
	untraced(b)
	ts := newTestServer(b, Config{})
	ctx := context.Background()
	for _, mode := range clientModes {
		b.Run(mode, func(b *testing.B) {
			c := ts.client(b, mode)
			h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()

			const baseN = 5000
			start := time.Now()
			for range baseN {
				if _, err := h.Call(ctx, "echo", nil); err != nil {
					b.Fatal(err)
				}
			}
			callNs := float64(time.Since(start).Nanoseconds()) / baseN

			// The application's other goroutine: cancels each call once
			// the driver runs it.
			cancels := make(chan context.CancelFunc, 1)
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				for cancel := range cancels {
					<-ts.reg.entered
					cancel()
				}
			}()
			defer func() { close(cancels); <-stopped }()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				cctx, cancel := context.WithCancel(ctx)
				cancels <- cancel
				if _, err := h.Call(cctx, "block", nil); !errors.Is(err, context.Canceled) {
					b.Fatalf("call: %v", err)
				}
				if err := <-ts.reg.left; !errors.Is(err, context.Canceled) {
					b.Fatalf("method saw %v", err)
				}
			}
			b.StopTimer()
			per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(per/1e3, "µs/op")
			b.ReportMetric(callNs/1e3, "µs/call")
			b.ReportMetric(per/callNs, "x-call")
		})
	}
}
