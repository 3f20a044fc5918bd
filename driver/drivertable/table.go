package drivertable

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/drvkit/drvkit/driver"
)

var (
	// ErrUnknown: no entry of that name.
	ErrUnknown = errors.New("unknown driver")
	// ErrExists: an entry of that name is in the table already.
	ErrExists = errors.New("driver already in the table")
	// ErrBadEntry: an entry is incomplete.
	ErrBadEntry = errors.New("incomplete driver entry")
	// ErrBadMatch: a custom personality's match key or value is not one
	// the driver takes.
	ErrBadMatch = errors.New("bad match")
)

// OpError is the error of a table operation: Op ("add", "wire",
// "personality", …), the driver or resource Name it applied to, and the
// cause. Its message is "op name: cause".
type OpError struct {
	Op   string
	Name string
	Err  error
}

func (e *OpError) Error() string {
	if e.Name == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Op + " " + e.Name + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

// Origin says where a driver's code runs.
type Origin int

const (
	// Builtin: compiled into the daemon; its instances run in-process.
	Builtin Origin = iota
	// Bundle: a manifest and an executable, its instances in processes of
	// their own (package driver/bundle reads the manifest, driver/host
	// makes the entry and runs the processes).
	Bundle
)

func (o Origin) String() string {
	switch o {
	case Builtin:
		return "built-in"
	case Bundle:
		return "bundle"
	}
	return "origin(" + strconv.Itoa(int(o)) + ")"
}

// MatchKey is a key a custom personality may match on: the name an operator
// writes (vid=1d50) and the provider nub's property it compares.
type MatchKey struct {
	Name  string // as written in --personality, e.g. "vid"
	Prop  string // the nub property, e.g. "idVendor"
	Doc   string // one line for help texts
	Parse func(string) (any, error)
}

// HexKey matches an integer property written in hex (with or without 0x),
// as lsusb prints USB ids, of at most bits bits.
func HexKey(name, prop string, bits int, doc string) MatchKey {
	return MatchKey{Name: name, Prop: prop, Doc: doc, Parse: func(s string) (any, error) {
		n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, bits)
		if err != nil {
			return nil, fmt.Errorf("%q is not a %d-bit hex number", s, bits)
		}
		return n, nil
	}}
}

// IntKey matches an integer property written in decimal, from lo to hi.
func IntKey(name, prop string, lo, hi int64, doc string) MatchKey {
	return MatchKey{Name: name, Prop: prop, Doc: doc, Parse: func(s string) (any, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q is not a number from %d to %d", s, lo, hi)
		}
		return n, nil
	}}
}

// StringKey matches a string property exactly.
func StringKey(name, prop, doc string) MatchKey {
	return MatchKey{Name: name, Prop: prop, Doc: doc, Parse: func(s string) (any, error) { return s, nil }}
}

// Entry is one driver of the table.
type Entry struct {
	Name    string // what --drivers and driver= name; also its personalities' name
	Summary string // one line for help texts
	Origin  Origin
	// Source is where a bundle's manifest was read; "" for built-ins.
	Source string
	// Needs lists the resources (Key names) the daemon must provide
	// before the driver's personalities can be built.
	Needs []string
	// MatchKeys are the keys a custom personality of the driver may match
	// on, for the class of nubs it drives; none: it takes no custom
	// personalities.
	MatchKeys []MatchKey
	// Require is matched by every personality of the driver, custom ones
	// included: what an instance cannot start without (a node to open).
	Require []driver.Match
	// Personalities returns the driver's default personalities, bound to
	// the host's resources. The first is the template of custom
	// personalities: its instance class, provider class, category and
	// constructor are theirs.
	Personalities func(r *Resources) ([]driver.Personality, error)
}

func (e *Entry) check() error {
	switch {
	case e.Name == "":
		return &OpError{Op: "add", Err: fmt.Errorf("%w: no name", ErrBadEntry)}
	case e.Personalities == nil:
		return &OpError{Op: "add", Name: e.Name, Err: fmt.Errorf("%w: no personalities", ErrBadEntry)}
	}
	seen := map[string]bool{}
	for _, k := range e.MatchKeys {
		if k.Name == "" || k.Prop == "" || k.Parse == nil || seen[k.Name] {
			return &OpError{Op: "add", Name: e.Name, Err: fmt.Errorf("%w: match key %q is empty or given twice", ErrBadEntry, k.Name)}
		}
		seen[k.Name] = true
	}
	return nil
}

// KeyNames lists the entry's match keys in order.
func (e *Entry) KeyNames() []string {
	out := make([]string, len(e.MatchKeys))
	for i, k := range e.MatchKeys {
		out[i] = k.Name
	}
	return out
}

// ParseMatch parses one key=value of a custom personality.
func (e *Entry) ParseMatch(key, value string) (driver.Match, error) {
	for _, k := range e.MatchKeys {
		if k.Name != key {
			continue
		}
		v, err := k.Parse(value)
		if err != nil {
			return driver.Match{}, &OpError{Op: "match", Name: e.Name, Err: fmt.Errorf("%w: %s %w", ErrBadMatch, key, err)}
		}
		return driver.MatchValue(k.Prop, v), nil
	}
	if len(e.MatchKeys) == 0 {
		return driver.Match{}, &OpError{Op: "match", Name: e.Name, Err: fmt.Errorf("%w: the driver takes no custom personalities", ErrBadMatch)}
	}
	return driver.Match{}, &OpError{Op: "match", Name: e.Name, Err: fmt.Errorf("%w: unknown key %q (want %s)", ErrBadMatch, key, strings.Join(e.KeyNames(), ", "))}
}

// Defaults returns the driver's default personalities, bound to r.
func (e *Entry) Defaults(r *Resources) ([]driver.Personality, error) {
	if err := e.wired(r); err != nil {
		return nil, err
	}
	ps, err := e.Personalities(r)
	if err != nil {
		return nil, e.opErr(err)
	}
	if len(ps) == 0 {
		return nil, &OpError{Op: "personalities", Name: e.Name, Err: fmt.Errorf("%w: no personalities", ErrBadEntry)}
	}
	for i := range ps {
		ps[i].Match = append(append([]driver.Match(nil), e.Require...), ps[i].Match...)
	}
	return ps, nil
}

// Custom returns a personality of the driver called name that matches the
// nubs match selects (and Require) instead of the defaults' matches, with
// score: an operator's personality for one product.
func (e *Entry) Custom(r *Resources, name string, score int, match []driver.Match) (driver.Personality, error) {
	if len(match) == 0 {
		return driver.Personality{}, &OpError{Op: "personality", Name: name, Err: fmt.Errorf("%w: no match key given", ErrBadMatch)}
	}
	if err := e.wired(r); err != nil {
		return driver.Personality{}, err
	}
	ps, err := e.Personalities(r)
	if err != nil {
		return driver.Personality{}, e.opErr(err)
	}
	if len(ps) == 0 {
		return driver.Personality{}, &OpError{Op: "personalities", Name: e.Name, Err: fmt.Errorf("%w: no personalities", ErrBadEntry)}
	}
	p := ps[0]
	p.Name = name
	p.Score = score
	p.Match = append(append([]driver.Match(nil), e.Require...), match...)
	return p, nil
}

// opErr adds the entry to err unless err says already what failed (a
// resource that could not be wired).
func (e *Entry) opErr(err error) error {
	var oe *OpError
	if errors.As(err, &oe) {
		return err
	}
	return &OpError{Op: "personalities", Name: e.Name, Err: err}
}

// wired checks that r provides everything e needs, naming what is missing.
func (e *Entry) wired(r *Resources) error {
	var missing []string
	for _, n := range e.Needs {
		if !r.Has(n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return &OpError{Op: "wire", Name: e.Name, Err: fmt.Errorf("needs %s: %w", strings.Join(missing, ", "), ErrNoResource)}
	}
	return nil
}

// Table is a set of entries by name; safe for concurrent use.
type Table struct {
	mu      sync.RWMutex
	entries map[string]*Entry
}

// New returns a table of entries.
func New(entries ...Entry) (*Table, error) {
	t := &Table{entries: map[string]*Entry{}}
	for _, e := range entries {
		if err := t.Add(e); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Add adds an entry; a name already in the table is refused.
func (t *Table) Add(e Entry) error {
	if err := e.check(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.entries[e.Name]; ok {
		return &OpError{Op: "add", Name: e.Name, Err: ErrExists}
	}
	t.entries[e.Name] = &e
	return nil
}

// Remove takes an entry out of the table (a bundle unloaded for good); it
// reports whether there was one.
func (t *Table) Remove(name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.entries[name]
	delete(t.entries, name)
	return ok
}

// Lookup returns the entry called name; the error of an unknown name
// lists the known ones.
func (t *Table) Lookup(name string) (*Entry, error) {
	t.mu.RLock()
	e, ok := t.entries[name]
	t.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (have %s)", ErrUnknown, name, strings.Join(t.Names(), ", "))
	}
	return e, nil
}

// Names lists the entries' names, sorted.
func (t *Table) Names() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]string, 0, len(t.entries))
	for n := range t.entries {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Entries returns the entries sorted by name.
func (t *Table) Entries() []*Entry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*Entry, 0, len(t.entries))
	for _, e := range t.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
