package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// findChromium returns Debian's chromium (make deps installs it). Outside CI
// a machine without it skips the browser test, saying so; in CI it fails.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed: `make deps` installs it (apt-get install chromium) when run as root")
	}
	t.Skip("chromium is not installed: run `sudo make deps` (or apt-get install chromium) to run the browser test")
	return ""
}

// artifactsDir is where the browser test leaves its screenshots:
// $DRVKIT_ARTIFACTS if set, the test's temporary directory otherwise.
func artifactsDir(t *testing.T) string {
	if d := os.Getenv("DRVKIT_ARTIFACTS"); d != "" {
		require.NoError(t, os.MkdirAll(d, 0o755))
		return d
	}
	return t.TempDir()
}

// latencyRecord is what the page notes when a pushed step changed the tree.
type latencyRecord struct {
	Kind      string  `json:"kind"` // add, remove
	Step      string  `json:"step"`
	Class     string  `json:"class"`
	Name      string  `json:"name"`
	AppliedMS float64 `json:"applied_ms"`
	PaintedMS float64 `json:"painted_ms"`
}

// TestExplorerInBrowser loads the explorer in a real headless chromium and
// watches the tree follow the simulated bus without reloading: a device
// plugged appears, its properties and lifecycle timeline open, the registry
// timeline and the leak report show, the device unplugged leaves. The page
// measures, for each pushed step, the delay from the lifecycle step in the
// daemon to the tree updated (and painted); the test reports it.
func TestExplorerInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a browser")
	}
	chromium := findChromium(t)
	leaktest.Check(t)
	d := startServe(t, simOptions(t))
	base := httpBase(d)
	art := artifactsDir(t)

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1440, 900),
		chromedp.UserDataDir(t.TempDir()),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	var closeOnce sync.Once
	closeBrowser := func() (err error) {
		closeOnce.Do(func() {
			err = chromedp.Cancel(bctx) // closes the browser and waits for it
			cancelBrowser()
			cancelAlloc()
		})
		return err
	}
	t.Cleanup(func() { _ = closeBrowser() })
	// The first action starts the browser: on bctx, which lives as long as
	// the browser; the others run under a deadline.
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate("about:blank")), "start chromium")
	ctx, cancel := context.WithTimeout(bctx, 120*time.Second)
	defer cancel()
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		err := chromedp.Do(ctx, steps...)
		// The page is live: a pushed step may replace a node between the
		// query that found it and the click on it. Doing it again finds
		// the new node; every step waits for what it needs, so a repeat
		// is harmless.
		for try := 0; err != nil && nodeReplaced(err) && try < 5; try++ {
			err = chromedp.Do(ctx, steps...)
		}
		require.NoError(t, err, what)
	}
	text := func(sel string) string {
		t.Helper()
		// The same race: the node found may be replaced before its text
		// is read.
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		for try := 0; err != nil && nodeReplaced(err) && try < 5; try++ {
			s, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		}
		require.NoError(t, err, "text of %s", sel)
		return s
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		require.NoError(t, err, "screenshot "+name)
		p := filepath.Join(art, name)
		require.NoError(t, os.WriteFile(p, png, 0o644))
		t.Logf("screenshot: %s", p)
	}
	visible := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.WaitVisible(chromedp.CSS(sel)) }
	gone := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.WaitNotPresent(chromedp.CSS(sel)) }
	click := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.Click(chromedp.CSS(sel)) }
	deviceRow := `#tree li[data-class="USBDevice"][data-name="2-1"]`

	// The page loads and shows the tree: the root, the boot disk and sg.
	run("load", chromedp.Navigate(base+"/"),
		visible(`#tree li[data-class="Root"]`),
		visible(`#tree li[data-class="SCSIGenericBlock"]`))
	_, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.__loadedOnce = 42`))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return text(`#conn`) == "live" }, 10*time.Second, 20*time.Millisecond, "event stream connected")

	// Plug: the device's node appears, pushed.
	inject := func(steps string) {
		t.Helper()
		ictx, icancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer icancel()
		require.NoError(t, d.inject(ictx, steps))
	}
	inject("plug usb 2-1 vid=46f4 pid=0001 serial=BROWSER manufacturer=drvkit product=\"Test Stick\" ifaces=08/06/50")
	run("device appears", visible(deviceRow), visible(`#tree li[data-class="USBMassStorage"]`))

	// Its properties.
	run("device properties", click(deviceRow+` > .row`), visible(`#service-properties`))
	props := text(`#service-properties`)
	require.Contains(t, props, "idVendor")
	require.Contains(t, props, "0x46f4")
	require.Contains(t, props, "BROWSER", "the serial number")

	// The driver's state and lifecycle timeline.
	run("driver timeline", click(`#tree li[data-class="USBMassStorage"] > .row`),
		visible(`#service-timeline li[data-step="start"]`))
	state, tl := text(`#service-state`), text(`#service-timeline`)
	require.Equal(t, "active", strings.TrimSpace(state))
	require.Contains(t, tl, "attach")
	require.Contains(t, tl, "start")
	shot("explorer-service.png")

	// The registry timeline and the leak report.
	run("registry timeline", click(`.tabs button[data-tab="timeline"]`), visible(`#registry-timeline li[data-step="publish"]`))
	shot("explorer-timeline.png")
	run("leaks", click(`.tabs button[data-tab="leaks"]`), visible(`#leak-text`))
	require.Contains(t, text(`#leak-text`), "live object(s)")
	shot("explorer-leaks.png")
	run("back to the service", click(`.tabs button[data-tab="service"]`))

	// Unplug: the node leaves.
	inject("unplug 2-1")
	run("device leaves", gone(deviceRow), gone(`#tree li[data-class="USBMassStorage"]`))

	// A leak: something keeps the driver after the device left. The tree
	// shows it stopped and held, its pane names the holder with its stack
	// and why-alive chain, and the leak report lists it.
	inject("plug usb 2-1 vid=46f4 pid=0001 serial=LEAK ifaces=08/06/50")
	run("device appears", visible(deviceRow), visible(`#tree li[data-class="USBMassStorage"][data-state="active"]`))
	drv := findClass(t, d.reg, "USBMassStorage")
	drv.TaggedRetain(holderTag{})
	released := false
	t.Cleanup(func() { // a failure below must not leak into the other tests
		if !released {
			drv.TaggedRelease(holderTag{})
		}
	})
	inject("unplug 2-1")
	heldRow := `#tree li[data-class="USBMassStorage"][data-state="stopped"]`
	run("held driver", gone(deviceRow), visible(heldRow), click(heldRow+` > .row`),
		visible(`#service-holders details`), visible(`#service-why li`))
	// The pane fills in once the service's details arrive.
	for _, sel := range []string{`#service-holders`, `#service-why`} {
		require.Eventually(t, func() bool { return strings.Contains(text(sel), "test holder") },
			20*time.Second, 20*time.Millisecond, "%s names the holder", sel)
	}
	shot("explorer-held.png")
	run("leak report", click(`.tabs button[data-tab="leaks"]`), visible(`#leak-text`))
	// The tab shows the report it had until the new one arrives.
	var leaks string
	require.Eventually(t, func() bool { leaks = text(`#leak-text`); return strings.Contains(leaks, "USBMassStorage") },
		20*time.Second, 20*time.Millisecond, "the leak report names the held driver")
	require.Contains(t, leaks, "test holder")
	require.Contains(t, leaks, "TestExplorerInBrowser", "the holder's stack")
	shot("explorer-leak-report.png")
	drv.TaggedRelease(holderTag{})
	released = true
	run("freed once released", gone(`#tree li[data-class="USBMassStorage"]`), click(`.tabs button[data-tab="service"]`))

	// More cycles, for the delay figures.
	const cycles = 10
	for i := range cycles {
		inject(fmt.Sprintf("plug usb 2-1 vid=46f4 pid=0001 serial=C%d ifaces=08/06/50", i))
		run("appears", visible(deviceRow))
		inject("unplug 2-1")
		run("leaves", gone(deviceRow))
	}

	// Never reloaded: the page is the one loaded first.
	marker, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.__loadedOnce`))
	require.NoError(t, err)
	require.Equal(t, 42, marker, "the page was reloaded")

	recs, err := chromedp.Run(ctx, chromedp.Evaluate[[]latencyRecord](`window.drvkitLatency`))
	require.NoError(t, err)
	var add, remove []float64
	for _, r := range recs {
		if r.Class != "USBDevice" || r.Name != "2-1" {
			continue
		}
		switch r.Kind {
		case "add":
			add = append(add, r.PaintedMS)
		case "remove":
			remove = append(remove, r.PaintedMS)
		}
	}
	// The appearances and departures came from pushed steps (the page
	// notes only those). A tree re-read the page schedules after a burst
	// may land between a step and its push, and show the node first: the
	// push then adds nothing to note (seen once with both cores busy), so
	// up to two of the twelve may go unnoted.
	require.GreaterOrEqual(t, len(add), cycles, "records: %+v", recs)
	require.LessOrEqual(t, len(add), cycles+2, "records: %+v", recs)
	require.GreaterOrEqual(t, len(remove), cycles, "records: %+v", recs)
	require.LessOrEqual(t, len(remove), cycles+2, "records: %+v", recs)
	p50 := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	t.Logf("lifecycle step → node painted in the browser: appear p50 %.1f ms max %.1f ms; leave p50 %.1f ms max %.1f ms (%d and %d of %d cycles, target ≤ 100 ms)",
		p50(add), slices.Max(add), p50(remove), slices.Max(remove), len(add), len(remove), cycles+2)

	require.NoError(t, closeBrowser())
	require.NoError(t, d.stop())
}

// nodeReplaced reports whether err is the browser saying a node the
// previous step found is gone from the live page (replaced by a pushed
// update): Chromium says it in two ways, depending on the command.
func nodeReplaced(err error) bool {
	return strings.Contains(err.Error(), "Could not find node with given id") ||
		strings.Contains(err.Error(), "No node with given id found")
}
