package reliability

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/verify"
)

var (
	flagSeed     = flag.Uint64("explore.seed", 0, "replay this random scenario seed only (printed by a failing run)")
	flagN        = flag.Int("explore.n", defaultRandomRuns, "random scenarios to run")
	flagFirst    = flag.Uint64("explore.first", 1, "seed of the first random scenario")
	flagTimeout  = flag.Duration("explore.deadline", 60*time.Second, "watchdog: a run taking longer is a deadlock")
	flagVerbose  = flag.Bool("explore.v", false, "log every run")
	flagAllKinds = flag.Bool("explore.allkinds", false, "TestExploreFaults: every fault kind of the verifier, not the six of the explorer")
	flagReplay   = flag.String("explore.replay", "", "TestExploreFaults: run only this schedule")
)

func TestMain(m *testing.M) { leaktest.Main(m) }

// enumKinds are the fault kinds TestExploreFaults pairs with every step
// (make test, under -race); -explore.allkinds takes every registered one.
var enumKinds = []string{"unplug", "app-kill", "unload", "panic", "job-hang", "fail"}

// options is the explorer's use of the Driver Verifier: usbstorage
// verified on the two-interface stick with vendord loaded next to it.
func options() verify.Options {
	return verify.Options{
		Device:     stick(),
		Extra:      []drivertable.Entry{vendorEntry},
		ExtraCalls: map[string]verify.Call{vendorName: {Method: "work", Input: []byte("x")}},
		Check:      takeVendorChecks,
		RunTimeout: *flagTimeout,
		NoShrink:   true,
		ReplayCommand: func(s verify.Schedule) string {
			if s.Seed != 0 {
				return fmt.Sprintf("go test ./reliability -run TestExploreRandom -explore.seed=%d", s.Seed)
			}
			return fmt.Sprintf("go test ./reliability -run TestExploreFaults -explore.replay='%s'", s)
		},
	}
}

// summary is the table a run of many schedules prints.
func summary(title string, rep *verify.Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n== %s (%s, race=%v)\n", title, runtime.Version(), raceEnabled)
	fmt.Fprintf(&b, "%-28s %10d\n", "runs", rep.Runs)
	fmt.Fprintf(&b, "%-28s %10d\n", "failures", rep.Failures)
	if rep.Runs > 0 {
		fmt.Fprintf(&b, "%-28s %10s\n", "mean run", (rep.Elapsed / time.Duration(rep.Runs)).Round(time.Microsecond))
	}
	notes := 0
	steps := map[string]int{}
	for _, r := range rep.Results {
		notes += len(r.Notes)
		for _, f := range r.Fired {
			_, at, _ := strings.Cut(f, "@")
			at, _, _ = strings.Cut(at, "+")
			at, _, _ = strings.Cut(at, "(")
			steps[at]++
		}
	}
	fmt.Fprintf(&b, "%-28s %10d\n", "blocked deadlines reported", notes)
	table := func(head string, m map[string]int) {
		b.WriteString(head + "\n")
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			fmt.Fprintf(&b, "  %-26s %10d\n", k, m[k])
		}
	}
	table("faults injected, by kind:", rep.Faults)
	table("faults injected, by step:", steps)
	return b.String()
}

func reportFailures(t *testing.T, rep *verify.Report, replay func(verify.Result) string) {
	t.Helper()
	for _, r := range rep.Results {
		if r.Failed() {
			var b strings.Builder
			for _, p := range r.Problems {
				b.WriteString(p.String() + "\n")
			}
			t.Errorf("scenario %s failed:\nreplay: %s\n%s", r.Schedule, replay(r), b.String())
		}
	}
}

// TestExploreFaults injects every fault kind at every lifecycle step of
// the topology, one pair per run, each at the step's first site: the
// verifier's systematic phase. Every pair must be reached.
func TestExploreFaults(t *testing.T) {
	if *flagSeed != 0 {
		t.Skip("replaying one seed")
	}
	opts := options()
	opts.Random = -1
	opts.ContinueOnFailure = true
	opts.Replay = *flagReplay
	if !*flagAllKinds {
		opts.Kinds = enumKinds
	}
	if *flagVerbose {
		opts.Progress = func(r verify.Result) {
			t.Logf("%s: %s fired=%v problems=%d notes=%q", r.Name, r.Schedule, r.Fired, len(r.Problems), r.Notes)
		}
	}
	rep, err := verify.Verify(context.Background(), usbstorage.Entry, opts)
	if err != nil {
		t.Fatal(err)
	}
	reportFailures(t, rep, func(r verify.Result) string {
		return fmt.Sprintf("go test ./reliability -run TestExploreFaults -explore.replay='%s'", r.Schedule)
	})
	for _, p := range rep.Pairs {
		if p.Status != "covered" && p.Status != "n/a" && p.Status != "failed" {
			t.Errorf("fault %s@%s: %s (%s): the topology no longer reaches the step", p.Kind, p.Step, p.Status, p.Why)
		}
	}
	t.Log(summary("fault × step enumeration", rep))
}

// TestExploreRandom runs -explore.n random schedules from seed
// -explore.first (or only -explore.seed) and prints the summary table.
func TestExploreRandom(t *testing.T) {
	opts := options()
	opts.NoSystematic = true
	opts.ContinueOnFailure = true
	opts.Random, opts.Seed = *flagN, *flagFirst
	if *flagSeed != 0 {
		opts.Random, opts.Seed = 1, *flagSeed
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failed := 0
	opts.Progress = func(r verify.Result) {
		if *flagVerbose {
			t.Logf("%s: %s fired=%v problems=%d notes=%q", r.Name, r.Schedule, r.Fired, len(r.Problems), r.Notes)
		}
		if r.Failed() {
			failed++
			for _, p := range r.Problems {
				if failed >= 5 || p.Kind == "watchdog" {
					cancel()
				}
			}
		}
	}
	rep, err := verify.Verify(ctx, usbstorage.Entry, opts)
	if err != nil {
		t.Fatal(err)
	}
	reportFailures(t, rep, func(r verify.Result) string {
		seed := strings.TrimPrefix(r.Name, "seed ")
		return "go test ./reliability -run TestExploreRandom -explore.seed=" + seed
	})
	t.Log(summary(fmt.Sprintf("random scenarios, seeds %d..%d", opts.Seed, opts.Seed+uint64(rep.Random)-1), rep))
}
