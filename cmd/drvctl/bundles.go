package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/drivertable"
)

// Driver bundles (issue 14): manifests loaded at start from --drivers-dir
// and by `drvctl load`, listed with the built-in drivers by `drvctl
// drivers`, unloaded by `drvctl unload` with kextunload's semantics. Their
// instances run in processes of their own (package driver/host).

const (
	opDrivers = "drivers"
	opLoad    = "load"

	// driversSchemaVersion versions `drivers -o json`.
	driversSchemaVersion = 1

	defaultDriversDir = "/etc/drvkit/drivers.d"
)

func init() {
	register(&command{name: "drivers", summary: "list the drivers: built-in and bundles, state, instances, last error (like kextstat)", setup: setupDrivers})
	register(&command{name: "load", args: "PATH", summary: "load a driver bundle (its manifest.toml, or the bundle directory)", setup: setupLoad})
}

// bundleOptions are serve's flags for bundles.
type bundleOptions struct {
	dir       string // "": load none at start
	allowRoot bool
}

func bundleFlags(fs *flag.FlagSet, o *bundleOptions) {
	fs.StringVar(&o.dir, "drivers-dir", defaultDriversDir, "`directory` of driver bundles loaded at start (each *.toml, or DIR/manifest.toml); missing is fine, a bad manifest is logged and skipped")
	fs.BoolVar(&o.allowRoot, "allow-root-drivers", false, "let bundle manifests run their driver as uid or gid 0")
}

// bundleSet is the daemon's bookkeeping of drivers beyond the registry's:
// the bundles loaded, the manifests refused at start, each driver's last
// failure.
type bundleSet struct {
	mu      sync.Mutex
	loaded  map[string]*bundle.Manifest // by driver name
	refused map[string]string           // manifest path → why
	lastErr map[string]string           // driver name → last Start failure
}

func newBundleSet() *bundleSet {
	return &bundleSet{loaded: map[string]*bundle.Manifest{}, refused: map[string]string{}, lastErr: map[string]string{}}
}

// startBundles records start failures and loads the bundles of the
// drivers directory. Like systemd with a broken unit file, a bad manifest
// does not stop the daemon: it is logged with file:line:field, skipped,
// and listed by `drvctl drivers` as refused, and the other drivers load.
// A missing directory is the normal case of a machine with no bundles.
func (d *daemon) startBundles() {
	d.bundles = newBundleSet()
	d.reg.SubscribeLifecycle(func(e driver.LifecycleEvent) {
		if e.Step == driver.StepStart && e.Err != "" {
			d.bundles.mu.Lock()
			d.bundles.lastErr[e.Name] = e.Err
			d.bundles.mu.Unlock()
		}
	})
	dir := d.opts.bundles.dir
	if dir == "" {
		return
	}
	paths, err := bundlePaths(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			d.log.Info("no driver bundles", "dir", dir)
		} else {
			d.log.Error("reading the drivers directory", "dir", dir, "err", err)
		}
		return
	}
	for _, p := range paths {
		m, err := d.loadBundle(p)
		if err != nil {
			d.log.Error("driver bundle refused", "err", err)
			d.bundles.mu.Lock()
			d.bundles.refused[p] = err.Error()
			d.bundles.mu.Unlock()
			continue
		}
		d.log.Info("driver bundle loaded", "driver", m.Name, "version", m.Version, "manifest", m.Path)
	}
}

// bundlePaths lists the manifests of dir in name order: every *.toml file,
// and DIR/manifest.toml of every subdirectory that has one.
func bundlePaths(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		switch {
		case e.IsDir():
			if _, err := os.Stat(filepath.Join(p, bundle.ManifestName)); err == nil {
				out = append(out, filepath.Join(p, bundle.ManifestName))
			}
		case strings.HasSuffix(e.Name(), ".toml"):
			out = append(out, p)
		}
	}
	return out, nil
}

// errAlreadyLoaded: a bundle of that name is loaded.
var errAlreadyLoaded = errors.New("already loaded")

// loadBundle reads a manifest and registers its personalities; on any
// failure nothing of it stays registered.
func (d *daemon) loadBundle(path string) (*bundle.Manifest, error) {
	m, err := bundle.Load(path, bundle.Options{
		AllowRoot: d.opts.bundles.allowRoot,
		Reserved: func(name string) bool {
			e, err := d.drivers.Lookup(name)
			return err == nil && e.Origin == drivertable.Builtin
		},
	})
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	personality := d.loaded[m.Name]
	d.mu.Unlock()
	if e, err := d.drivers.Lookup(m.Name); err == nil {
		return nil, &bundle.OpError{Op: "load", File: m.Path, Field: "name", Err: fmt.Errorf("%w: driver %q from %s (unload it first)", errAlreadyLoaded, m.Name, e.Source)}
	} else if personality {
		return nil, &bundle.OpError{Op: "load", File: m.Path, Field: "name", Err: fmt.Errorf("%w: %q is the name of a --personality", errAlreadyLoaded, m.Name)}
	}
	e := d.host.Entry(m)
	if err := d.drivers.Add(e); err != nil {
		d.host.Forget(m.Name)
		return nil, err
	}
	// The name is ours now: its rule holds before any instance can exist.
	d.access.set(m)
	ps, err := e.Defaults(d.res)
	if err == nil {
		for _, p := range ps {
			if err = d.reg.RegisterPersonality(p); err != nil {
				break
			}
		}
	}
	if err != nil {
		d.reg.UnregisterPersonality(m.Name)
		d.drivers.Remove(m.Name)
		d.host.Forget(m.Name)
		d.access.forget(m.Name)
		return nil, err
	}
	d.setLoaded(m.Name, true)
	d.syncHold()
	d.bundles.mu.Lock()
	d.bundles.loaded[m.Name] = m
	delete(d.bundles.refused, m.Path)
	delete(d.bundles.lastErr, m.Name)
	d.bundles.mu.Unlock()
	return m, nil
}

type loadArgs struct {
	Path string `json:"path"`
}

type loadResult struct {
	Driver        string `json:"driver"`
	Version       string `json:"version"`
	Manifest      string `json:"manifest"`
	Personalities int    `json:"personalities"`
}

// unloadRefusedError: unload gave up with instances left, and the driver
// stays loaded (its personalities registered again), as kextunload leaves
// a kext with instances loaded.
type unloadRefusedError struct {
	driver string
	loaded bool // it was loaded and stays so
	err    error
}

func (e *unloadRefusedError) Error() string {
	// The verdict first: what follows may be many lines of holders.
	if !e.loaded {
		return e.driver + " was not loaded, its instances are still terminating: " + e.err.Error()
	}
	return e.driver + " stays loaded (drvctl unload --force unloads it anyway): " + e.err.Error()
}

func (e *unloadRefusedError) Unwrap() error { return e.err }

// unloadDriver terminates every instance of a driver and unloads it. If
// instances remain at the deadline, the driver stays loaded and the error
// says so, unless force: then it is unloaded anyway and the result says
// how many instances are still terminating.
func (d *daemon) unloadDriver(ctx context.Context, a unloadArgs) (unloadResult, error) {
	d.mu.Lock()
	wasLoaded := d.loaded[a.Driver]
	d.mu.Unlock()
	saved := d.reg.Personalities(a.Driver)
	res, err := adminUnload(ctx, d.reg, a)
	// Unloaded or registered again: the hold follows what is loaded.
	defer d.syncHold()
	if err != nil && (!a.Force || !errors.Is(err, driver.ErrHasInstances)) {
		for _, p := range saved {
			if rerr := d.reg.RegisterPersonality(p); rerr != nil {
				d.log.Error("registering a personality again after a refused unload", "driver", a.Driver, "err", rerr)
			}
		}
		if !errors.Is(err, driver.ErrHasInstances) {
			return res, err
		}
		return res, &unloadRefusedError{driver: a.Driver, loaded: wasLoaded && len(saved) > 0, err: err}
	}
	if err != nil {
		res.Forced = true
		for _, s := range d.reg.Services() {
			if p := s.Personality(); p != nil && p.Name == a.Driver {
				res.Remaining++
			}
		}
		d.log.Warn("driver unloaded by force with instances left", "driver", a.Driver, "instances", res.Remaining, "err", err)
	}
	d.setLoaded(a.Driver, false)
	if e, lerr := d.drivers.Lookup(a.Driver); lerr == nil && e.Origin == drivertable.Bundle {
		d.drivers.Remove(a.Driver)
		d.host.Forget(a.Driver)
		d.access.forget(a.Driver)
		d.bundles.mu.Lock()
		delete(d.bundles.loaded, a.Driver)
		d.bundles.mu.Unlock()
	}
	return res, nil
}

// driverRow is one line of `drvctl drivers`.
type driverRow struct {
	Name        string `json:"name"`
	Version     string `json:"version,omitempty"`
	Origin      string `json:"origin"` // built-in, bundle, personality
	State       string `json:"state"`  // loaded, running, not loaded, disabled, refused
	Runnable    bool   `json:"runnable"`
	Instances   int    `json:"instances"`
	Terminating int    `json:"terminating"`
	// PIDs are a bundle's driver processes; Crashes its crashes within
	// its restart window, TotalCrashes since it was loaded.
	PIDs         []int  `json:"pids,omitempty"`
	Crashes      int    `json:"crashes,omitempty"`
	TotalCrashes int    `json:"total_crashes,omitempty"`
	Disabled     string `json:"disabled,omitempty"` // why a bundle is disabled
	Source       string `json:"source,omitempty"`
	LastError    string `json:"last_error,omitempty"`
	// Access is a bundle's [access] table when it lists anyone: only
	// root, the admins and these open its services.
	Access *accessRow `json:"access,omitempty"`
}

type accessRow struct {
	UIDs []uint32 `json:"uids,omitempty"`
	GIDs []uint32 `json:"gids,omitempty"`
}

type driversDoc struct {
	SchemaVersion int         `json:"schema_version"`
	Drivers       []driverRow `json:"drivers"`
}

func (d *daemon) driversDoc() driversDoc {
	active, tearing := map[string]int{}, map[string]int{}
	for _, s := range d.reg.Services() {
		if p := s.Personality(); p != nil {
			if s.State().Active {
				active[p.Name]++
			} else {
				tearing[p.Name]++
			}
		}
	}
	d.mu.Lock()
	loaded := make(map[string]bool, len(d.loaded))
	for n := range d.loaded {
		loaded[n] = true
	}
	d.mu.Unlock()
	b := d.bundles
	b.mu.Lock()
	defer b.mu.Unlock()
	doc := driversDoc{SchemaVersion: driversSchemaVersion, Drivers: []driverRow{}}
	row := func(name string) driverRow {
		return driverRow{Name: name, Instances: active[name], Terminating: tearing[name], LastError: b.lastErr[name]}
	}
	for _, e := range d.drivers.Entries() {
		r := row(e.Name)
		r.Origin = e.Origin.String()
		r.Source = e.Source
		switch {
		case !loaded[e.Name]:
			r.State = "not loaded"
		default:
			r.State, r.Runnable = "loaded", true
		}
		if st, ok := d.host.Status(e.Name); ok && e.Origin == drivertable.Bundle {
			r.PIDs, r.Crashes, r.TotalCrashes, r.Disabled = st.PIDs, st.Crashes, st.TotalCrashes, st.Disabled
			if st.LastError != "" {
				r.LastError = st.LastError
			}
			switch {
			case st.Disabled != "" && loaded[e.Name]:
				r.State, r.Runnable = "disabled", false
			case len(st.PIDs) > 0:
				r.State = "running"
			}
		}
		if m := b.loaded[e.Name]; m != nil {
			r.Version = m.Version
			if len(m.Access.UIDs) > 0 || len(m.Access.GIDs) > 0 {
				r.Access = &accessRow{UIDs: m.Access.UIDs, GIDs: m.Access.GIDs}
			}
		}
		doc.Drivers = append(doc.Drivers, r)
		delete(loaded, e.Name)
	}
	for name := range loaded { // --personality names
		r := row(name)
		r.Origin, r.State, r.Runnable = "personality", "loaded", true
		doc.Drivers = append(doc.Drivers, r)
	}
	for path, why := range b.refused {
		name := strings.TrimSuffix(filepath.Base(path), ".toml")
		if filepath.Base(path) == bundle.ManifestName {
			name = filepath.Base(filepath.Dir(path)) // the bundle directory's
		}
		doc.Drivers = append(doc.Drivers, driverRow{Name: name, Origin: "bundle", State: "refused", Source: path, LastError: why})
	}
	// By name; under one name, what is loaded before what was refused.
	sort.Slice(doc.Drivers, func(i, j int) bool {
		a, b := doc.Drivers[i], doc.Drivers[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if ar, br := a.State == "refused", b.State == "refused"; ar != br {
			return br
		}
		return a.Source < b.Source
	})
	return doc
}

// bundleAdmin serves the administrative calls of this file.
func (d *daemon) bundleAdmin(op string, decode func(any) error) (any, error) {
	switch op {
	case opDrivers:
		return d.driversDoc(), nil
	case opLoad:
		var a loadArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		if a.Path == "" {
			return nil, errors.New("no manifest named")
		}
		m, err := d.loadBundle(a.Path)
		if err != nil {
			return nil, err
		}
		d.log.Info("driver bundle loaded", "driver", m.Name, "version", m.Version, "manifest", m.Path)
		return loadResult{Driver: m.Name, Version: m.Version, Manifest: m.Path, Personalities: len(m.Personalities)}, nil
	}
	return nil, fmt.Errorf("unknown administrative operation %q", op)
}

// --- client side ---

func setupDrivers(fs *flag.FlagSet, e *env) func([]string) error {
	sock := socketFlag(fs, e)
	format := outputFlag(fs, "text", "json")
	return func(args []string) error {
		f, err := format()
		if err != nil {
			return err
		}
		if len(args) > 0 {
			return usagef("drivers takes no arguments, got %q", args)
		}
		var doc driversDoc
		if _, err := call(context.Background(), sock(), opDrivers, nil, &doc); err != nil {
			return err
		}
		if f == "json" {
			return json.NewEncoder(e.stdout).Encode(&doc) // compact: one document a line
		}
		return writeDrivers(e.stdout, &doc)
	}
}

// writeDrivers prints one line per driver, kextstat's columns; a disabled
// bundle's line is followed by why.
func writeDrivers(w io.Writer, doc *driversDoc) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tORIGIN\tSTATE\tINSTANCES\tPIDS\tCRASHES\tLAST ERROR")
	for _, r := range doc.Drivers {
		inst := fmt.Sprint(r.Instances)
		if r.Terminating > 0 {
			inst += fmt.Sprintf(" (+%d terminating)", r.Terminating)
		}
		pids, crashes := "-", "-"
		if r.Origin == drivertable.Bundle.String() && r.State != "refused" {
			crashes = fmt.Sprint(r.Crashes)
			if r.TotalCrashes != r.Crashes {
				crashes += fmt.Sprintf(" (%d in all)", r.TotalCrashes)
			}
		}
		if len(r.PIDs) > 0 {
			ps := make([]string, len(r.PIDs))
			for i, p := range r.PIDs {
				ps[i] = fmt.Sprint(p)
			}
			pids = strings.Join(ps, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, dash(r.Version), r.Origin, r.State, inst, pids, crashes, dash(oneLine(r.LastError)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range doc.Drivers {
		if r.Disabled != "" {
			fmt.Fprintf(w, "%s is disabled: %s (drvctl unload %s, then load it again)\n", r.Name, r.Disabled, r.Name)
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func setupLoad(fs *flag.FlagSet, e *env) func([]string) error {
	sock := socketFlag(fs, e)
	return func(args []string) error {
		if len(args) != 1 {
			return usagef("want exactly one manifest or bundle directory, got %d arguments", len(args))
		}
		// The daemon reads the path: make it absolute here, where it was
		// written.
		p, err := filepath.Abs(args[0])
		if err != nil {
			return err
		}
		var res loadResult
		if _, err := call(context.Background(), sock(), opLoad, loadArgs{Path: p}, &res); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "loaded %s %s from %s: %d personalities\n", res.Driver, res.Version, res.Manifest, res.Personalities)
		return nil
	}
}

// unloadDone says what a successful unload did.
func unloadDone(w io.Writer, name string, res unloadResult) {
	if res.Forced {
		fmt.Fprintf(w, "unloaded %s by force: %d instance(s) still terminating\n", name, res.Remaining)
		return
	}
	fmt.Fprintf(w, "unloaded %s: every instance freed\n", name)
}
