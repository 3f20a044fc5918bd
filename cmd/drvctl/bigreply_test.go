package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/userclient/wire"
)

var bigN = flag.Int("big.n", 10000, "SCSI LUNs for the large admin reply tests (make stress: 100000)")

// lunScenario is n SCSI LUNs, disks and CD-ROMs alternately.
func lunScenario(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "scsi add 0:%d:%d:%d type=%d\n", i/(256*16384), i%256, (i/256)%16384, 5*(i%2))
	}
	return b.String()
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// rawInspect sends an inspect over a hand-made version 3 connection and
// reads the parts and the reply, keeping nothing: the bytes received.
func rawInspect(t *testing.T, sock string) int {
	nc, err := net.Dial("unix", sock)
	require.NoError(t, err)
	defer nc.Close()
	send := func(typ wire.MsgType, id uint64, ctl string) {
		b, err := wire.AppendFrame(nil, &wire.Frame{Type: typ, ID: id, Control: []byte(ctl)}, wire.DefaultMaxFrame)
		require.NoError(t, err)
		_, err = nc.Write(b)
		require.NoError(t, err)
	}
	dec := wire.NewDecoder(nc, 0)
	send(wire.TypeHello, 1, `{"protocol":"drvkit-userclient","versions":[3]}`)
	f, err := dec.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, wire.TypeWelcome, f.Type)
	send(wire.TypeAdmin, 2, `{"op":"inspect"}`)
	n := 0
	for {
		f, err := dec.ReadFrame()
		require.NoError(t, err)
		n += len(f.Control) + len(f.Data)
		if f.Type != wire.TypePart {
			require.Equal(t, wire.TypeReply, f.Type)
			return n
		}
	}
}

// samplePeakHeap samples the heap every 2 ms until the returned
// function is called, which returns the highest value seen.
func samplePeakHeap() func() uint64 {
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		var peak uint64
		var m runtime.MemStats
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapAlloc)
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(stop); return <-done }
}

// Admin replies many times the 1 MiB frame limit — inspect and leaks --all
// at 10k devices — arrive complete over the real socket, and the daemon's
// heap goes back to where it was once they are sent.
func TestLargeAdminReplies(t *testing.T) {
	n := *bigN
	if testing.Short() {
		n = 2000
	}
	dir := t.TempDir()
	scn := filepath.Join(dir, "luns.scn")
	require.NoError(t, os.WriteFile(scn, []byte(lunScenario(n)), 0o644))
	sock := filepath.Join(dir, "d.sock")
	// Trace adds to what is traced: start from nothing, and give leaktest
	// back every class.
	refcount.TraceOff()
	t.Cleanup(refcount.TraceAll)
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "sg", logFormat: "text", logLevel: "warn",
		// Traced: the sg instances, one object each in leaks --all (all
		// classes, with a stack per reference, is 200 MB at 10k LUNs).
		trace: sg.Class, socketGroup: -1, termTimeout: 10 * time.Second, closeTimeout: 10 * time.Second})
	require.Eventually(t, func() bool {
		started := 0
		for _, s := range d.reg.Services() {
			if s.Class() == sg.Class && s.State().Started {
				started++
			}
		}
		return started == n
	}, max(5*time.Minute, time.Duration(n)*10*time.Millisecond), 100*time.Millisecond, "sg did not start on every LUN")

	// The daemon's side alone: a raw version 3 client that counts the
	// bytes and keeps none.
	before := heapInUse()
	peak := samplePeakHeap()
	got := rawInspect(t, sock)
	t.Logf("daemon streaming inspect at %d LUNs: %d bytes, daemon peak heap +%d MB", n, got, (peak()-before)>>20)

	before = heapInUse()
	e, out, errb := testEnv(nil, 0)
	start := time.Now()
	peak = samplePeakHeap()
	require.Equal(t, 0, run([]string{"inspect", "-o", "json", "--socket", sock}, e), errb.String())
	t.Logf("inspect -o json at %d LUNs: %d bytes in %v; peak heap +%d MB (daemon and drvctl together)", n, out.Len(), time.Since(start), (peak()-before)>>20)
	require.Greater(t, out.Len(), 1<<20, "more than one frame")
	var doc inspectDoc
	require.NoError(t, json.Unmarshal(out.Bytes(), &doc))
	sgs, ids := 0, map[uint64]bool{}
	for _, s := range doc.Services {
		require.False(t, ids[s.ID], "service %d twice", s.ID)
		ids[s.ID] = true
		if s.Class == sg.Class {
			sgs++
		}
	}
	require.Equal(t, n, sgs, "every sg instance is in the reply")
	require.Equal(t, len(d.reg.Services()), len(doc.Services))
	whole, err := json.Marshal(inspectRegistry(d.reg))
	require.NoError(t, err)
	streamed, err := json.Marshal(&doc)
	require.NoError(t, err)
	require.JSONEq(t, string(whole), string(streamed), "the streamed encoding is the document's")
	require.True(t, bytes.Equal(append(whole, '\n'), out.Bytes()), "inspect -o json prints the compact document as the daemon sent it")
	whole, streamed = nil, nil

	// Filtered queries: the daemon selects before it encodes, so the
	// reply (and the time) is the matches', not the registry's.
	e, out, errb = testEnv(nil, 0)
	start = time.Now()
	require.Equal(t, 0, run([]string{"inspect", "-o", "json", "-c", "SCSIDevice", "--property", "type=5", "-d", "1", "--socket", sock}, e), errb.String())
	t.Logf("inspect -c SCSIDevice --property type=5 -d 1 at %d LUNs: %d services, %d bytes in %v", n, n/2, out.Len(), time.Since(start))
	doc = inspectDoc{}
	require.NoError(t, json.Unmarshal(out.Bytes(), &doc))
	require.Len(t, doc.Services, n/2, "every CD-ROM, nothing else")
	for _, s := range doc.Services {
		require.Equal(t, "SCSIDevice", s.Class)
	}
	e, out, errb = testEnv(nil, 0)
	start = time.Now()
	require.Equal(t, 0, run([]string{"inspect", "-o", "json", "0:0:1:0", "--socket", sock}, e), errb.String())
	t.Logf("inspect 0:0:1:0 at %d LUNs: %d bytes in %v", n, out.Len(), time.Since(start))
	doc = inspectDoc{}
	require.NoError(t, json.Unmarshal(out.Bytes(), &doc))
	require.Len(t, doc.Services, 2, "the LUN and its sg instance")

	// leaks --all: the summaries count every object in one reply; the
	// objects are detailed a page at a time (the default page, then the
	// text report walked page by page).
	e, out, errb = testEnv(nil, 0)
	require.Equal(t, 0, run([]string{"leaks", "--all", "-o", "json", "--socket", sock}, e), errb.String())
	t.Logf("leaks --all -o json at %d LUNs: %d bytes", n, out.Len())
	var rep struct {
		Live []struct {
			Class string `json:"class"`
			Count int    `json:"count"`
		} `json:"live"`
		Leaks []struct {
			Objects int `json:"objects"`
		} `json:"leaks"`
		Objects      []json.RawMessage `json:"objects"`
		ObjectsTotal int               `json:"objects_total"`
		NextAfter    uint64            `json:"next_after"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), "complete JSON")
	require.Len(t, rep.Live, 1, "only sg is traced")
	require.Equal(t, sg.Class, rep.Live[0].Class)
	require.Equal(t, n, rep.Live[0].Count, "every sg instance is in the report")
	require.Equal(t, n, rep.ObjectsTotal)
	require.Len(t, rep.Objects, min(n, defaultLeaksLimit), "one page detailed")
	require.NotZero(t, rep.NextAfter)
	objects := 0
	for _, l := range rep.Leaks {
		objects = max(objects, l.Objects)
	}
	require.Equal(t, n, objects)

	providers := map[string]bool{}
	page := max(n/4, 500)
	args := []string{"leaks", "--all", "--limit", strconv.Itoa(page), "--socket", sock}
	pages, bytes := 0, 0
	for {
		e, out, errb = testEnv(nil, 0)
		require.Equal(t, 0, run(args, e), errb.String())
		pages++
		bytes += out.Len()
		for _, m := range regexp.MustCompile(`provider SCSIDevice#\d+`).FindAllString(out.String(), -1) {
			providers[m] = true
		}
		next := regexp.MustCompile(`(?m)^next page: drvctl (.*)$`).FindStringSubmatch(out.String())
		if next == nil {
			break
		}
		args = append(strings.Fields(next[1]), "--socket", sock)
	}
	t.Logf("leaks --all text at %d LUNs: %d pages of %d objects, %d bytes", n, pages, page, bytes)
	require.Equal(t, (n+page-1)/page, pages)
	require.Len(t, providers, n, "the text report names every sg instance's provider")

	// What the daemon held for the replies is released: the test's own
	// copies are dropped first.
	out, doc = nil, inspectDoc{}
	after := heapInUse()
	t.Logf("daemon heap (whole test process) before %d MB, after %d MB", before>>20, after>>20)
	require.Less(t, int64(after)-int64(before), int64(16<<20), "the replies' memory is released")
}
