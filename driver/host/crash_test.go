package host_test

import (
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/host"
	"github.com/drvkit/drvkit/examples/bundles/gocounter/counter"
	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/userclient"
)

// gone reports whether process pid has died (reaped, or a zombie).
func dead(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] == 'Z'
}

func kill(t testing.TB, pid int) {
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool { return dead(pid) }, 5*time.Second, time.Millisecond)
}

// killQuietly is kill for the registry's goroutines, where a test must not
// fail: at Stop and Detach the process was stopped already.
func killQuietly(pid int) {
	if syscall.Kill(pid, syscall.SIGKILL) != nil {
		return
	}
	for i := 0; i < 5000 && !dead(pid); i++ {
		time.Sleep(time.Millisecond)
	}
}

// TestCrashRelaunch: a driver process SIGKILLed while it runs: the
// application hears ServiceIsTerminated with the cause "crashed", the
// instance goes, and after the backoff matching runs again on the nub,
// which relaunches the driver in a new process.
func TestCrashRelaunch(t *testing.T) {
	e := newEnv(t)
	m := e.loadBundle("counter", "")
	nub := e.plug("1-1:1.0")
	inst := e.instance(nub)
	pid := e.pid(m.Name)

	c := e.dial()
	defer c.Close()
	h, err := c.Open(e.ctx, userclient.Match{Class: counter.Class})
	require.NoError(t, err)
	// When the crashed instance leaves the nub, the host says a driver is
	// coming back to it (what keeps a USB-hold interface held).
	require.False(t, e.h.Relaunching(nub))
	atDetach := make(chan bool, 1)
	unsub := e.r.SubscribeLifecycle(func(ev driver.LifecycleEvent) {
		if ev.Step == driver.StepDetach && ev.ServiceID == inst.ID() && ev.ProviderID == nub.ID() {
			atDetach <- e.h.Relaunching(nub)
		}
	})
	defer unsub()
	kill(t, pid)
	n := nextNotification(t, h, "ServiceIsTerminated")
	require.Equal(t, "crashed", n.Cause)
	require.Equal(t, "crashed", n.RootCause)
	require.Equal(t, inst.ID(), n.Service)
	_, err = h.Call(e.ctx, "count", nil)
	require.ErrorIs(t, err, userclient.ErrTerminated)
	require.NoError(t, h.Close())

	again := e.instance(nub)
	require.NotEqual(t, inst.ID(), again.ID())
	require.True(t, <-atDetach, "Relaunching while the nub has no driver")
	require.Eventually(t, func() bool { return !e.h.Relaunching(nub) }, 5*time.Second, time.Millisecond, "relaunched: over")
	pid2 := e.pid(m.Name)
	require.NotEqual(t, pid, pid2)
	st := e.status(m.Name)
	require.Equal(t, 1, st.Crashes)
	require.Contains(t, st.LastError, "killed by signal")
	require.Empty(t, st.Disabled)

	h, err = c.Open(e.ctx, userclient.Match{Class: counter.Class})
	require.NoError(t, err)
	out, err := h.Call(e.ctx, "count", nil)
	require.NoError(t, err)
	var r counter.Reply
	require.NoError(t, json.Unmarshal(out, &r))
	require.Equal(t, pid2, r.PID)
	require.NoError(t, h.Close())

	require.NoError(t, nub.TerminateSyncWith(e.ctx, driver.CauseUnplug))
	require.NoError(t, e.r.Unload(e.ctx, m.Name))
	require.NoError(t, c.Close())
	e.finish()
}

// TestKillAtEveryStep: the driver process SIGKILLed at each step of the
// lifecycle (fault-injection points of the instance): termination always
// completes, in the contract's order, and nothing is left.
func TestKillAtEveryStep(t *testing.T) {
	for _, tc := range []struct {
		point   faultinject.Point
		relaunc bool // the instance was active: it comes back
	}{
		{faultinject.Call, true},
		{faultinject.WillTerminate, false},
		{faultinject.DidTerminate, false},
		{faultinject.Stop, false},
		{faultinject.Detach, false},
	} {
		t.Run(tc.point.String(), func(t *testing.T) {
			e := newEnv(t)
			m := e.loadBundle("counter", "")
			nub := e.plug("1-1:1.0")
			inst := e.instance(nub)
			pid := e.pid(m.Name)

			in := faultinject.New()
			in.MustAdd(faultinject.Rule{Point: tc.point,
				Match:  func(s faultinject.Site) bool { return s.Target != nil && s.Target.ID() == inst.ID() },
				Action: faultinject.Do(func(faultinject.Site) { killQuietly(pid) })})
			uninstall, err := in.Install()
			require.NoError(t, err)
			defer uninstall()

			// The daemon's path: a direct call never reaches the daemon's
			// call point (TestDirectCallDriverKilled kills under one).
			c := e.dial(userclient.WithoutDirectCalls())
			defer c.Close()
			h, err := c.Open(e.ctx, userclient.Match{Class: counter.Class})
			require.NoError(t, err)
			require.False(t, h.Direct())
			if tc.point == faultinject.Call {
				_, err := h.Call(e.ctx, "count", nil)
				require.Error(t, err, "the process died under the call")
				n := nextNotification(t, h, "ServiceIsTerminated")
				require.Equal(t, "crashed", n.Cause)
				require.NoError(t, h.Close())
				e.instance(nub) // relaunched
				require.Equal(t, 1, e.status(m.Name).Crashes)
			} else {
				require.NoError(t, h.Close())
				require.NoError(t, nub.TerminateSyncWith(e.ctx, driver.CauseUnplug))
				require.Len(t, in.Stats().Sites, 1, "the fault fired")
			}
			require.NoError(t, nub.TerminateSyncWith(e.ctx, driver.CauseUnplug))
			require.Empty(t, e.status(m.Name).PIDs)
			require.NoError(t, e.r.Unload(e.ctx, m.Name))
			uninstall()
			require.NoError(t, c.Close())
			e.finish()
		})
	}
}

// TestPanicCrashLoop: a driver whose goroutine panics after every start
// crashes, is relaunched with backoff, and is disabled after max_crashes
// within the window; drvctl drivers would say why. The nub stays, without
// a driver.
func TestPanicCrashLoop(t *testing.T) {
	e := newEnv(t)
	m := e.loadBundle("panicgo", "")
	nub := e.plug("1-1:1.0")
	require.Eventually(t, func() bool { return e.status(m.Name).Disabled != "" }, 30*time.Second, 10*time.Millisecond)
	st := e.status(m.Name)
	require.Equal(t, 3, st.Crashes)
	require.Contains(t, st.Disabled, "crashed 3 times within 1m0s")
	require.Contains(t, st.LastError, "exited with status 2")
	require.Contains(t, e.logs.String(), "the driver's own goroutine panics", "the panic reached the daemon's log")
	require.Empty(t, e.r.Personalities(m.Name), "a disabled bundle matches nothing")
	require.Eventually(t, func() bool { return e.disabled.String() == m.Name+"\n" }, 5*time.Second, time.Millisecond,
		"the Disabled hook heard it once, after the personalities went")
	require.Equal(t, []host.Counts{{Driver: m.Name, Starts: 3, Crashes: 3, Disables: 1}}, e.h.Counts())
	require.Eventually(t, func() bool { return len(nub.Clients()) == 0 }, 10*time.Second, 10*time.Millisecond)
	require.True(t, nub.State().Active)
	require.False(t, e.h.Relaunching(nub), "disabled: no driver is coming back (the USB hold gives the interface back)")
	require.NoError(t, nub.TerminateSyncWith(e.ctx, driver.CauseUnplug))
	require.NoError(t, e.r.Unload(e.ctx, m.Name))
	e.h.Forget(m.Name)
	e.finish()
}

// TestHungStop: a driver that does not answer stop is killed after its
// stop timeout and the termination completes; while it waits, the
// instance's blockers say so.
func TestHungStop(t *testing.T) {
	e := newEnv(t)
	m := e.loadBundle("hangstop", `stop_timeout = "400ms"`)
	nub := e.plug("1-1:1.0")
	inst := e.instance(nub)
	pid := e.pid(m.Name)
	gone := inst.Done()
	begin := time.Now()
	nub.TerminateWith(driver.CauseUnplug)
	require.Eventually(t, func() bool {
		for _, b := range inst.Blockers() {
			if strings.Contains(b.What, "stop driver process "+strconv.Itoa(pid)) {
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond, "blockers name the stopping process")
	select {
	case <-gone:
	case <-e.ctx.Done():
		t.Fatal("termination did not complete")
	}
	took := time.Since(begin)
	require.GreaterOrEqual(t, took, 400*time.Millisecond)
	st := e.status(m.Name)
	require.Contains(t, st.LastError, "no answer to stop within 400ms")
	hangs := e.h.DriverHangs(m.Name)
	require.Len(t, hangs, 1)
	require.Contains(t, hangs[0], "stop gocounter["+strconv.Itoa(pid)+"]: driver process did not answer in time: no answer to stop within 400ms")
	require.Empty(t, st.PIDs)
	require.True(t, dead(pid))
	require.NoError(t, e.r.Unload(e.ctx, m.Name))
	e.finish()
}

// TestStartFailures: a process that cannot start, exits at once, speaks
// another protocol version or is killed during Start is a crash (counted,
// relaunched, and finally disabled); a driver that refuses to start is
// not. Each says what happened, and the daemon carries on.
func TestStartFailures(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		crash   bool
		lastErr string
	}{
		{"missing", true, "no such file or directory"},
		{"exit", true, "exited with status 3"},
		{"badversion", true, "protocol version mismatch: the peer speaks 2.0, this side 1.3"},
		{"killstart", true, "killed by signal"},
		{"failstart", false, "the device says no"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			e := newEnv(t)
			mode := tc.mode
			if mode == "missing" {
				mode = "counter"
			}
			m := e.manifest(mode, "", "")
			if tc.mode == "missing" {
				// Loaded while it existed, gone when it runs.
				m.Executable += ".gone"
			}
			e.load(e.h.Entry(m))
			nub := e.plug("1-1:1.0")
			if tc.crash {
				require.Eventually(t, func() bool { return e.status(m.Name).Disabled != "" }, 30*time.Second, 10*time.Millisecond)
			} else {
				require.Eventually(t, func() bool { return e.status(m.Name).LastError != "" }, 30*time.Second, 10*time.Millisecond)
				time.Sleep(200 * time.Millisecond) // a relaunch would happen by now
				require.Zero(t, e.status(m.Name).TotalCrashes)
				require.Empty(t, e.status(m.Name).Disabled)
			}
			require.Contains(t, e.status(m.Name).LastError, tc.lastErr)
			require.Eventually(t, func() bool { return len(nub.Clients()) == 0 }, 10*time.Second, 10*time.Millisecond)
			require.NoError(t, nub.TerminateSyncWith(e.ctx, driver.CauseUnplug))
			require.NoError(t, e.r.Unload(e.ctx, m.Name))
			e.h.Forget(m.Name)
			e.finish()
		})
	}
}

// TestBadMessages: a driver that sends an oversized or malformed message
// while it runs is given up on (a crash that says what it sent); the
// daemon keeps running.
func TestBadMessages(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{"oversize", "message too large"},
		{"garbage", "malformed message: not a JSON object"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			e := newEnv(t)
			m := e.loadBundle(tc.mode, "")
			nub := e.plug("1-1:1.0")
			require.Eventually(t, func() bool { return e.status(m.Name).TotalCrashes > 0 }, 20*time.Second, 5*time.Millisecond)
			require.Contains(t, e.status(m.Name).LastError, tc.want)
			require.Contains(t, e.status(m.Name).LastError, "protocol violation")
			require.NoError(t, e.r.Unload(e.ctx, m.Name))
			e.h.Forget(m.Name)
			require.NoError(t, nub.TerminateSyncWith(e.ctx, driver.CauseUnplug))
			e.finish()
		})
	}
}

// TestMethodLimits: the manifest's methods are the only ones, with their
// max_input and max_output enforced by the daemon; a cancelled call
// returns at once.
func TestMethodLimits(t *testing.T) {
	e := newEnv(t)
	m := e.loadBundle("counter", "")
	nub := e.plug("1-1:1.0")
	inst := e.instance(nub)

	_, err := inst.Call(e.ctx, "echo", []byte("0123456789abcdefX"))
	require.ErrorIs(t, err, host.ErrTooLarge)
	require.ErrorContains(t, err, "17 bytes of input, max_input is 16")
	out, err := inst.Call(e.ctx, "echo", []byte("0123456789abcdef"))
	require.NoError(t, err)
	require.Equal(t, "0123456789abcdef", string(out))
	_, err = inst.Call(e.ctx, "reset", nil)
	require.ErrorIs(t, err, driver.ErrNoMethod, "not in the manifest")

	ctx, cancel := contextWithTimeout(e, 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err = inst.Call(ctx, "wait", nil)
	require.True(t, errors.Is(err, ctxDeadline), err)
	require.Less(t, time.Since(begin), 5*time.Second)
	out, err = inst.Call(e.ctx, "echo", []byte("still"))
	require.NoError(t, err, "the driver serves on after a cancelled call")
	require.Equal(t, "still", string(out))

	require.NoError(t, nub.TerminateSyncWith(e.ctx, driver.CauseUnplug))
	require.NoError(t, e.r.Unload(e.ctx, m.Name))
	e.finish()
}

// What a flooding driver sends.
const (
	floodNotes = 12000
	floodMsg   = 0x10001
)

// TestFloodingDriver: a driver process that floods notifications and log
// lines is paced, not believed: every notification arrives, in order, at
// no more than the notification rate (the flood backs up in the driver's
// own socket), and its log lines past the log rate are dropped and
// counted, so the journal stays usable.
func TestFloodingDriver(t *testing.T) {
	e := newEnv(t)
	m := e.loadBundle("flood", "")
	nub := e.plug("1-1:1.0")
	inst := e.instance(nub)
	got := make(chan int, floodNotes)
	remove := inst.AddInterest(func(msg driver.Message) {
		if msg.Type == floodMsg {
			b, _ := msg.Data.([]byte)
			n, _ := strconv.Atoi(string(b))
			got <- n
		}
	})
	_, err := inst.Call(e.ctx, "echo", nil)
	require.NoError(t, err)
	begin := time.Now()
	for want := range floodNotes {
		select {
		case n := <-got:
			require.Equal(t, want, n, "in order, none lost")
		case <-e.ctx.Done():
			t.Fatalf("%d of %d notifications arrived", want, floodNotes)
		}
	}
	took := time.Since(begin)
	remove()
	// A lower bound: the pacing cannot be beaten, however fast the machine.
	minTook := time.Duration(float64(floodNotes-1000) / 10000 * float64(time.Second) * 0.9)
	require.GreaterOrEqual(t, took, minTook, "notifications past the burst are paced")
	lines := strings.Count(e.logs.String(), "flood line")
	t.Logf("%d notifications in %v; %d of %d log lines logged", floodNotes, took, lines, floodNotes/2)
	require.GreaterOrEqual(t, lines, 200, "the burst is logged")
	require.Less(t, lines, 200+int(50*took.Seconds()*2)+50, "lines past the log rate are dropped")
	require.Contains(t, e.logs.String(), "dropped=", "the next line logged says how many were dropped")
	require.NoError(t, nub.TerminateSyncWith(e.ctx, driver.CauseUnplug))
	require.NoError(t, e.r.Unload(e.ctx, m.Name))
	e.h.Forget(m.Name)
	e.finish()
}
