package main

import (
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug/usbhold"
	"github.com/drvkit/drvkit/internal/statefile"
)

// The USB hold (hotplug/usbhold): while a personality on USBInterface nubs
// is loaded, the kernel's drivers do not get the interfaces it will claim,
// so a stick drvkit drives never appears as /dev/sdX first.

// defaultHoldDir keeps the hold's state without --state-dir: the kernel
// state it records does not survive a reboot, and neither does /run.
const defaultHoldDir = "/run/drvkit"

const holdStateName = "usb-hold.json"

func init() {
	register(&command{name: "unhold", summary: "give the kernel back what a killed daemon's USB hold kept: lift the gates, probe the interfaces (run when no daemon runs)", setup: setupUnhold})
}

// holdStatePath is where serve and unhold keep the hold's state.
func holdStatePath(stateDir string) string {
	if stateDir == "" {
		stateDir = defaultHoldDir
	}
	return filepath.Join(stateDir, holdStateName)
}

// startHold recovers what a killed predecessor's hold left and returns the
// hold, or nil (logged) when it cannot run: the daemon then claims as
// before, by detaching the kernel's driver.
func (d *daemon) startHold() *usbhold.Hold {
	path := holdStatePath(d.opts.stateDir)
	if err := statefile.CheckDir(filepath.Dir(path)); err != nil {
		d.log.Error("usb hold off: its state directory", "err", err)
		return nil
	}
	h, rep, err := usbhold.New(usbhold.Config{Sysfs: d.opts.sysfs, State: path, Personalities: d.reg.AllPersonalities, Log: d.log,
		// Read by the hold's watch only, which starts after d.host is
		// set (serve: host.New, then Hold.Watch).
		Relaunching: func(nub *driver.Service) bool { return d.host != nil && d.host.Relaunching(nub) }})
	if !rep.Empty() {
		d.log.Warn("usb hold: undid what a previous daemon left", "ungated", rep.Ungated, "authorized", rep.Authorized, "given_back", rep.GivenBack)
	}
	if err != nil {
		d.log.Error("usb hold off", "err", err)
		return nil
	}
	return h
}

// syncHold follows the loaded personalities: gates set while one holds,
// lifted when none does. Called after every change of personalities.
func (d *daemon) syncHold() {
	if d.hold == nil {
		return
	}
	rules := usbhold.Rules(d.reg.AllPersonalities())
	var b strings.Builder
	_ = usbhold.WriteRules(&b, rules)
	if err := d.hold.Sync(); err != nil {
		d.log.Error("usb hold", "err", err)
	}
	d.log.Info("usb hold", "gated", d.hold.Gated(), "rules", strings.TrimSpace(b.String()))
}

func setupUnhold(fs *flag.FlagSet, e *env) func([]string) error {
	stateDir := fs.String("state-dir", "", "the daemon's --state-dir (empty: "+defaultHoldDir+")")
	sysfs := fs.String("sysfs", "/sys", "where sysfs is mounted")
	return func(args []string) error {
		if len(args) > 0 {
			return usagef("unhold takes no arguments, got %q", args)
		}
		rep, err := usbhold.Recover(*sysfs, holdStatePath(*stateDir))
		for _, l := range []struct {
			what  string
			names []string
		}{{"gate lifted", rep.Ungated}, {"authorized and probed", rep.Authorized}, {"given back", rep.GivenBack}} {
			for _, n := range l.names {
				fmt.Fprintf(e.stdout, "%s: %s\n", l.what, n)
			}
		}
		if err != nil {
			return err
		}
		if rep.Empty() {
			fmt.Fprintln(e.stdout, "nothing held")
		}
		return nil
	}
}
