package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/drvkit/drvkit/internal/cputime"
	"github.com/drvkit/drvkit/refcount"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
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

// floorChunk is how many operations a benchmark runs before switching
// between itself and its floor: short enough that both see the same
// machine (load from other processes comes and goes in milliseconds).
const floorChunk = 32

// BenchmarkCallRoundTrip: one call through the socket, the server, the user
// client and the driver's method, and back. Its floor is a plain Go echo
// over a Unix socket exchanging frames of the same sizes (a server
// goroutine reads the request and writes the reply), timed in chunks
// interleaved with the calls: x-echo is the ratio. x-direct is the ratio
// to the same method called in process (driver.Service.Call).
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
			// The floor exchanges the bytes a call does.
			ctl, _ := json.Marshal(wire.HandleMsg{Handle: 1, Method: "echo"})
			req, _ := wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeCall, ID: 1000, Control: ctl, Data: in}, wire.DefaultMaxFrame)
			rep, _ := wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeReply, ID: 1000, Data: in}, wire.DefaultMaxFrame)
			floor := newEchoFloor(b, req, rep)
			for range 100 { // warm both paths up
				floor.roundTrip(b)
				if _, err := h.Call(ctx, "echo", in); err != nil {
					b.Fatal(err)
				}
			}
			var callT, floorT time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(floorChunk, b.N-done)
				t0 := time.Now()
				for range n {
					floor.roundTrip(b)
				}
				t1 := time.Now()
				for range n {
					if _, err := h.Call(ctx, "echo", in); err != nil {
						b.Fatal(err)
					}
				}
				callT += time.Since(t1)
				floorT += t1.Sub(t0)
				done += n
			}
			b.StopTimer()
			per := float64(callT.Nanoseconds()) / float64(b.N)
			b.ReportMetric(per, "ns/op") // the calls alone, not the floor's rounds
			b.ReportMetric(float64(floorT.Nanoseconds())/float64(b.N), "echo-ns/op")
			b.ReportMetric(float64(callT)/float64(floorT), "x-echo")
			b.ReportMetric(per/directNs, "x-direct")
			b.ReportMetric(float64(ts.Stats().Handovers), "handovers")
		})
	}
}

// BenchmarkNotificationFanout: a driver message to 1,000 connected clients;
// latency until the last one has read it. Each round is followed (or
// preceded, alternately) by a round of the floor: one goroutine writing
// the same frame to 1,000 Unix sockets, each read by its own goroutine.
// x-floor-p50 and x-floor-p99 compare the percentiles; x-floor-cpu
// compares the process's CPU time over the two kinds of round (the work
// per notification, steadier than latency on a loaded machine).
//
// The application reads its notifications as an application would: from
// Handle.Notifications() in a goroutine of its own (untraced, traced), or
// in a handler the client's reading goroutine calls
// (WithNotificationHandler: -handler), which is what the floor's readers
// are.
func BenchmarkNotificationFanout(b *testing.B) {
	// untraced: an embedding application's default; traced: the daemon's
	// (drvctl serve traces every class unless --trace says otherwise).
	for _, handler := range []bool{false, true} {
		suffix := map[bool]string{false: "", true: "-handler"}[handler]
		b.Run("untraced"+suffix, func(b *testing.B) { untraced(b); fanout(b, handler, writeFloor) })
		b.Run("traced"+suffix, func(b *testing.B) {
			b.Setenv(refcount.EnvVar, "all")
			refcount.TraceAll()
			fanout(b, handler, writeFloor)
		})
	}
}

// BenchmarkNotificationFanoutRing is BenchmarkNotificationFanout against
// the ring floor: the same plain program sending through io_uring, 64
// sends per system call, as the server sends a fan-out where the kernel
// allows. x-ring-floor-p50, x-ring-floor-p99 and x-ring-floor-cpu are
// what drvkit costs beyond the plain program that uses the same kernel
// interface.
func BenchmarkNotificationFanoutRing(b *testing.B) {
	for _, handler := range []bool{false, true} {
		suffix := map[bool]string{false: "", true: "-handler"}[handler]
		b.Run("untraced"+suffix, func(b *testing.B) { untraced(b); fanout(b, handler, ringFloor) })
		b.Run("traced"+suffix, func(b *testing.B) {
			b.Setenv(refcount.EnvVar, "all")
			refcount.TraceAll()
			fanout(b, handler, ringFloor)
		})
	}
}

// BenchmarkNotificationFanoutHop is BenchmarkNotificationFanout through
// Handle.Notifications() against the hop floor: the plain program whose
// readers each hand the message to a goroutine of its own over a
// buffered channel, as such an application receives it. x-hop-floor-p50,
// x-hop-floor-p99 and x-hop-floor-cpu are what drvkit costs beyond the
// plain program with the same goroutine hand-off; the hand-off's own cost
// is the hop floor's against BenchmarkNotificationFanout's floor.
func BenchmarkNotificationFanoutHop(b *testing.B) {
	b.Run("untraced", func(b *testing.B) { untraced(b); fanout(b, false, hopFloor) })
	b.Run("traced", func(b *testing.B) {
		b.Setenv(refcount.EnvVar, "all")
		refcount.TraceAll()
		fanout(b, false, hopFloor)
	})
}

// fanoutOnlyEnv, set to "real", "floor", "ring" (the ring floor) or "hop"
// (the hop floor), makes
// the fan-out benchmark run that kind of round alone, with no ratio: a
// loop for perf record or perf stat to compare with another kind's
// (docs/performance.md).
const fanoutOnlyEnv = "DRVKIT_FANOUT_ONLY"

// fanoutRounds is the fewest rounds of each kind a fan-out benchmark
// runs: p99 is then the 3rd slowest of 300, not one sample.
const fanoutRounds = 300

// fanout runs fan-out rounds against the floor of the given kind.
func fanout(b *testing.B, handler bool, kind floorKind) {
	const clients = 1000
	ts := newTestServer(b, Config{Limits: Limits{MaxConns: clients + 8, MaxConnsPerUID: clients + 8, MaxHandlesPerUID: clients + 8}})
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
	var handle, service uint64
	var opts []userclient.DialOption
	if handler {
		opts = append(opts, userclient.WithNotificationHandler(func(_ *userclient.Handle, n userclient.Notification) {
			if n.Type == driverMsgType {
				got.Done()
			}
		}))
	}
	for range clients {
		c, err := userclient.Dial(ctx, ts.sock, opts...)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
		if err != nil {
			b.Fatal(err)
		}
		handle, service = 1, h.Service().ID
		if handler {
			continue
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
	only := os.Getenv(fanoutOnlyEnv)
	if k, ok := map[string]floorKind{"floor": writeFloor, "ring": ringFloor, "hop": hopFloor}[only]; ok {
		kind = k
	}
	floor := newFanoutFloor(b, clients, kind)
	lat := make([]time.Duration, 0, b.N)
	flat := make([]time.Duration, 0, b.N)
	// The process's CPU time over each kind of round: the work a
	// notification costs, which the load of other processes changes far
	// less than it changes the latencies.
	var cpu, fcpu time.Duration
	cpuOK := true
	timed := func(sum *time.Duration, f func()) {
		c0, ok0 := cputime.Process()
		f()
		c1, ok1 := cputime.Process()
		*sum += c1 - c0
		cpuOK = cpuOK && ok0 && ok1
	}
	real := func(data []byte) {
		timed(&cpu, func() {
			got.Add(clients)
			start := time.Now()
			ts.dev.message(data)
			got.Wait()
			lat = append(lat, time.Since(start))
		})
	}
	if kind == ringFloor && floor.ring == nil {
		b.Skip("io_uring unavailable: no ring floor")
	}
	name := kind.String()
	floorRound := func(frame []byte) {
		timed(&fcpu, func() { flat = append(flat, floor.round(b, frame)) })
	}
	// At least fanoutRounds of each kind, so that p99 is not the slowest
	// round or two: slow rounds come from outside the process.
	rounds := max(b.N, fanoutRounds)
	b.ResetTimer()
	for i := 0; i < rounds; i++ {
		data := fmt.Appendf(nil, "%d", i)
		frame := wire.AppendNotification(nil, handle, userclient.Notification{Type: driverMsgType, Service: service, Data: data})
		switch {
		case only == "real":
			real(data)
			continue
		case only != "":
			floorRound(frame)
			continue
		}
		if i%2 == 0 {
			real(data)
			floorRound(frame)
		} else {
			floorRound(frame)
			real(data)
		}
	}
	b.StopTimer()
	if only != "" {
		// One kind of round alone, for a profiler: its p50 and CPU.
		lat = append(lat, flat...)
		b.ReportMetric(float64(percentile(lat, 0.50).Microseconds()), only+"-p50-µs")
		if cpuOK {
			b.ReportMetric(float64((cpu+fcpu).Nanoseconds())/float64(rounds*clients), only+"-cpu-ns/note")
		}
		return
	}
	b.ReportMetric(float64(rounds), "rounds")
	if cpuOK && fcpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(rounds*clients), "cpu-ns/note")
		b.ReportMetric(float64(fcpu.Nanoseconds())/float64(rounds*clients), name+"-cpu-ns/note")
		b.ReportMetric(float64(cpu)/float64(fcpu), "x-"+name+"-cpu")
	}
	reportLatencies(b, lat)
	p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
	f50, f99 := percentile(flat, 0.50), percentile(flat, 0.99)
	b.ReportMetric(float64(mean(lat)), "ns/op") // the daemon's rounds alone
	b.ReportMetric(float64(f50.Microseconds()), name+"-p50-µs")
	b.ReportMetric(float64(f99.Microseconds()), name+"-p99-µs")
	b.ReportMetric(float64(p50)/float64(f50), "x-"+name+"-p50")
	b.ReportMetric(float64(p99)/float64(f99), "x-"+name+"-p99")
}

func mean(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(max(len(d), 1))
}

// BenchmarkKillToFreed: a child process that opened a device is SIGKILLed;
// latency from the kill to the free of its user client. Its floor is the
// kernel's own part: a plain child connected to a plain server is
// SIGKILLed, until the server's read returns EOF; trials alternate between
// the two. At least killTrials trials each (ns/op is the kill→freed mean),
// so that p99 is not one sample: the children are started killBatch at a
// time, both kinds, and killed one by one once all are idle, so that the
// start-ups (most of a trial's time) overlap and fall in no measured
// window. Untraced and traced (the daemon's default), each on an otherwise
// idle machine and with a second process (hog) keeping both cores busy.
func BenchmarkKillToFreed(b *testing.B) {
	for _, traced := range []bool{false, true} {
		for _, hog := range []bool{false, true} {
			name := map[bool]string{false: "untraced", true: "traced"}[traced]
			if hog {
				name += "/hog"
			}
			b.Run(name, func(b *testing.B) {
				if traced {
					b.Setenv(refcount.EnvVar, "all")
					refcount.TraceAll()
				} else {
					untraced(b)
				}
				killToFreed(b, hog)
			})
		}
	}
}

const (
	killTrials = 300 // per kind: p99 is then the 3rd slowest of each, not the slowest
	killBatch  = 25  // children of each kind started at once
)

func killToFreed(b *testing.B, hog bool) {
	ts := newTestServer(b, Config{})
	floor := newKillFloor(b)
	if hog {
		startHog(b)
	}
	trials := max(b.N, killTrials)
	lat := make([]time.Duration, 0, trials)
	flat := make([]time.Duration, 0, trials)
	real := func(ch *child, id uint64) {
		killed := ch.kill()
		freed := ts.reg.waitFreed(b, id)
		lat = append(lat, freed.Sub(killed))
		ch.cmd.Wait()
	}
	for i := 0; i < trials; {
		n := min(killBatch, trials-i)
		children := make([]*child, n)
		for j := range children {
			children[j] = startChild(b, "", "open", ts.sock, nil)
		}
		plain := floor.prepare(b, n)
		ids := make([]uint64, n)
		for j, ch := range children {
			ids[j] = ch.opened(b)
		}
		for j := range n {
			if (i+j)%2 == 0 {
				real(children[j], ids[j])
				flat = append(flat, floor.trial(plain[j]))
			} else {
				flat = append(flat, floor.trial(plain[j]))
				real(children[j], ids[j])
			}
		}
		i += n
	}
	p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
	f50, f99 := percentile(flat, 0.50), percentile(flat, 0.99)
	b.ReportMetric(float64(mean(lat).Nanoseconds()), "ns/op")
	b.ReportMetric(float64(len(lat)), "trials")
	reportLatencies(b, lat)
	b.ReportMetric(float64(f50.Microseconds()), "floor-p50-µs")
	b.ReportMetric(float64(f99.Microseconds()), "floor-p99-µs")
	b.ReportMetric(float64(p50)/float64(f50), "x-floor-p50")
	b.ReportMetric(float64(p99)/float64(f99), "x-floor-p99")
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
