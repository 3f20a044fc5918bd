package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
)

// personalitySpec is one --personality flag: a driver of the table
// registered under a match of the operator's, as an IOKit personality names
// a product. It serves devices the driver's own personality does not match
// (a vendor-specific interface that speaks bulk-only all the same), or
// picks this driver over another one for a known product: its score beats
// the class match.
type personalitySpec struct {
	Name     string
	Driver   string
	Keys     []matchArg // the match keys, in the order given
	Score    int
	hasScore bool
	match    []driver.Match
}

// matchArg is one key=value of a --personality.
type matchArg struct{ Key, Value string }

// defaultPersonalityScore is above the default personalities' (score 0): a
// product match is more specific than a class match.
const defaultPersonalityScore = 100

// personalityFlags collects repeated --personality flags; the driver names
// and match keys are checked against the table.
type personalityFlags struct {
	table *drivertable.Table
	specs []personalitySpec
}

func (p *personalityFlags) String() string {
	if p == nil {
		return ""
	}
	var parts []string
	for _, s := range p.specs {
		parts = append(parts, s.String())
	}
	return strings.Join(parts, " ")
}

func (p *personalityFlags) Set(v string) error {
	if p.table == nil {
		p.table = builtinDrivers()
	}
	s, err := parsePersonality(p.table, v)
	if err != nil {
		return err
	}
	for _, o := range p.specs {
		if o.Name == s.Name {
			return fmt.Errorf("name %q is already another personality's", s.Name)
		}
	}
	p.specs = append(p.specs, s)
	return nil
}

func (s personalitySpec) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "name=%s,driver=%s", s.Name, s.Driver)
	for _, k := range s.Keys {
		fmt.Fprintf(&b, ",%s=%s", k.Key, k.Value)
	}
	fmt.Fprintf(&b, ",score=%d", s.Score)
	return b.String()
}

// parsePersonality parses "name=N,driver=D,KEY=VALUE...[,score=S]": the
// match keys are the driver's (vid, pid, … for a USB interface driver;
// type, vendor, model for a SCSI one), at least one. Its errors do not
// repeat the value: the flag package says which flag and value it was.
func parsePersonality(tbl *drivertable.Table, v string) (personalitySpec, error) {
	s := personalitySpec{Score: defaultPersonalityScore}
	seen := map[string]bool{}
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || val == "" {
			return s, fmt.Errorf("%q is not key=value", kv)
		}
		if seen[k] {
			return s, fmt.Errorf("%s given twice", k)
		}
		seen[k] = true
		switch k {
		case "name":
			s.Name = val
		case "driver":
			s.Driver = val
		case "score":
			n, err := strconv.Atoi(val)
			if err != nil {
				return s, fmt.Errorf("score %q is not an integer", val)
			}
			s.Score, s.hasScore = n, true
		default:
			s.Keys = append(s.Keys, matchArg{Key: k, Value: val})
		}
	}
	for _, k := range []string{"name", "driver"} {
		if !seen[k] {
			return s, fmt.Errorf("%s is required", k)
		}
	}
	e, err := tbl.Lookup(s.Driver)
	if err != nil {
		return s, err
	}
	if _, err := tbl.Lookup(s.Name); err == nil {
		return s, fmt.Errorf("name %q is a driver's of the table", s.Name)
	}
	if len(e.MatchKeys) == 0 {
		return s, fmt.Errorf("driver %s takes no custom personalities", s.Driver)
	}
	if len(s.Keys) == 0 {
		return s, fmt.Errorf("no match key (driver %s matches on %s)", s.Driver, strings.Join(e.KeyNames(), ", "))
	}
	for _, a := range s.Keys {
		m, err := e.ParseMatch(a.Key, a.Value)
		if err != nil {
			var oe *drivertable.OpError
			if errors.As(err, &oe) {
				err = oe.Err // the driver's name is in the message already
			}
			return s, err
		}
		s.match = append(s.match, m)
	}
	return s, nil
}

// matchString is the match keys as given, for the log.
func (s personalitySpec) matchString() string {
	parts := make([]string, len(s.Keys))
	for i, k := range s.Keys {
		parts[i] = k.Key + "=" + k.Value
	}
	return strings.Join(parts, ",")
}

// personalityKeysHelp lists, per driver of the table, the match keys its
// personalities take.
func personalityKeysHelp(tbl *drivertable.Table) string {
	var parts []string
	for _, e := range tbl.Entries() {
		if len(e.MatchKeys) > 0 {
			parts = append(parts, e.Name+": "+strings.Join(e.KeyNames(), ", "))
		}
	}
	return strings.Join(parts, "; ")
}

// personality builds the registry personality from the driver's entry.
func (s personalitySpec) personality(e *drivertable.Entry, res *drivertable.Resources) (driver.Personality, error) {
	return e.Custom(res, s.Name, s.Score, s.match)
}
