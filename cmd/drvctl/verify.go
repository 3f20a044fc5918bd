package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/verify"
	"github.com/drvkit/drvkit/verify/bundlehost"
)

func init() {
	register(&command{name: "verify", args: "DRIVER|BUNDLE", summary: "explore a driver through every lifecycle fault (Driver Verifier)", setup: setupVerify})
}

// errVerifyFailed: the driver failed verification (the report says how).
var errVerifyFailed = errors.New("the driver failed verification")

// defaultVerifyBudget is what `drvctl verify` spends by default: every
// (step × fault) pair, then random schedules until it is used up; with
// setup and the last run the command ends within a minute.
const defaultVerifyBudget = 55 * time.Second

func setupVerify(fs *flag.FlagSet, e *env) func([]string) error {
	device := fs.String("device", "", "device `model`: "+strings.Join(verify.ModelNames(), ", ")+" (default: from what the driver needs)")
	budget := fs.Duration("budget", defaultVerifyBudget, "time for the whole verification; random schedules fill what the (step × fault) pairs leave")
	random := fs.Int("random", -1, "run `N` random schedules at most (0: none; default: until the budget is used up)")
	seed := fs.Uint64("seed", 1, "first random `seed`")
	replay := fs.String("replay", "", "run only this `schedule` (a failure prints it)")
	kinds := fs.String("faults", "", "comma-separated fault `kinds` (default all: "+strings.Join(faultNames(), ", ")+")")
	steps := fs.String("steps", "", "comma-separated `steps` (default all)")
	noShrink := fs.Bool("no-shrink", false, "report a failing schedule as found, without shrinking it")
	driversDir := fs.String("drivers-dir", defaultDriversDir, "`directory` where a bundle given by name is looked for (NAME/manifest.toml or NAME.toml)")
	output := outputFlag(fs, "text", "json")
	return func(args []string) error {
		format, err := output()
		if err != nil {
			return err
		}
		if len(args) != 1 {
			return usagef("want one driver name or bundle path")
		}
		entry, m, err := verifyEntry(args[0], *driversDir)
		if err != nil {
			return err
		}
		opts := verify.Options{Budget: *budget, Random: *random, Seed: *seed, Replay: *replay, NoShrink: *noShrink}
		if *random == 0 {
			opts.Random = -1
		} else if *random < 0 {
			opts.Random = 0
		}
		if *device != "" {
			m, ok := verify.Models()[*device]
			if !ok {
				return usagef("unknown device model %q (want %s)", *device, strings.Join(verify.ModelNames(), ", "))
			}
			opts.Device = m()
		}
		if *kinds != "" {
			opts.Kinds = strings.Split(*kinds, ",")
		}
		if *steps != "" {
			for _, s := range strings.Split(*steps, ",") {
				opts.Steps = append(opts.Steps, verify.Step(s))
			}
		}
		if *replay != "" {
			if _, err := verify.ParseSchedule(*replay); err != nil {
				return usagef("--replay: %v", err)
			}
		}
		if m != nil {
			// A bundle runs out of process, through the daemon's own host.
			if opts, err = bundlehost.Options(m, opts); err != nil {
				return err
			}
		}
		cmdline := "drvctl verify " + args[0]
		if *device != "" {
			cmdline += " --device " + *device
		}
		opts.ReplayCommand = func(s verify.Schedule) string { return fmt.Sprintf("%s --replay '%s'", cmdline, s) }
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		rep, err := verify.Verify(ctx, entry, opts)
		if err != nil {
			return err
		}
		if format == "json" {
			err = rep.WriteJSON(e.stdout)
		} else {
			err = rep.WriteText(e.stdout)
			fmt.Fprintf(e.stdout, "time: %v (systematic %v)\n", rep.Elapsed.Round(100*time.Millisecond), rep.Systematic.Round(100*time.Millisecond))
		}
		if err != nil {
			return err
		}
		if !rep.Passed() {
			return errVerifyFailed
		}
		return nil
	}
}

func faultNames() []string {
	var out []string
	for _, k := range verify.FaultKinds() {
		out = append(out, k.Name)
	}
	return out
}

// verifyEntry is a built-in driver by name, a bundle by path (a manifest
// or its directory), or a bundle by name in the drivers directory
// (DIR/NAME/manifest.toml or DIR/NAME.toml). A bundle's manifest is
// returned with its entry: it runs out of process (verify/bundlehost).
func verifyEntry(arg, dir string) (drivertable.Entry, *bundle.Manifest, error) {
	t := builtinDrivers()
	if e, err := t.Lookup(arg); err == nil {
		return *e, nil, nil
	}
	path := arg
	if !strings.ContainsRune(arg, '/') && !strings.HasSuffix(arg, ".toml") {
		path = ""
		for _, p := range []string{filepath.Join(dir, arg, "manifest.toml"), filepath.Join(dir, arg+".toml")} {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
	}
	if path != "" {
		m, err := bundle.Load(path, bundle.Options{})
		if err != nil {
			return drivertable.Entry{}, nil, err
		}
		return m.Entry(nil), m, nil
	}
	names := t.Names()
	sort.Strings(names)
	return drivertable.Entry{}, nil, &usageError{msg: fmt.Sprintf("unknown driver %q (built-in: %s; or a bundle: a path, or a name in %s)", arg, strings.Join(names, ", "), dir), noUsage: true}
}
