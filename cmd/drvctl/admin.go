package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount"
)

// Administrative operations, as the daemon serves them. Each takes its
// arguments as JSON and returns a JSON-able result and optional raw bytes.
// They are plain functions over the registry so they can be tested without
// a socket.

const (
	opInspect   = "inspect"
	opTerminate = "terminate"
	opUnload    = "unload"
	opLeaks     = "leaks"
	opWhy       = "why"
	opBlockers  = "blockers"
)

// ErrNoSuchService is returned for an ID the registry does not know.
var errNoSuchService = errors.New("no such service")

type idArgs struct {
	ID uint64 `json:"id"`
}

type unloadArgs struct {
	Driver  string        `json:"driver"`
	Timeout time.Duration `json:"timeout"`
}

type leaksArgs struct {
	Format string `json:"format"` // text, json, pprof
}

// blockerEntry is one line of progress: a service and what keeps it.
type blockerEntry struct {
	Service string   `json:"service"`
	What    string   `json:"what"`
	Stacks  []string `json:"stacks"`
}

type terminateResult struct {
	Service string `json:"service"`
	Freed   bool   `json:"freed"`
}

type unloadResult struct {
	Driver string `json:"driver"`
}

func adminTerminate(ctx context.Context, r *driver.Registry, args idArgs, timeout time.Duration) (terminateResult, error) {
	s, release, ok := r.Lookup(args.ID)
	if !ok {
		return terminateResult{}, fmt.Errorf("%w: id %d", errNoSuchService, args.ID)
	}
	name := s.String()
	// TerminateSync waits for the free, which our lookup reference would
	// prevent: drop it first, s stays valid for the call because the
	// registry still holds its own reference until the end of termination.
	done := s.Done()
	s.Terminate()
	release()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case <-done:
		return terminateResult{Service: name, Freed: true}, nil
	case <-ctx.Done():
	}
	// Still alive: look it up again to say what blocks it.
	if s, release, ok := r.Lookup(args.ID); ok {
		defer release()
		return terminateResult{Service: name}, &driver.BlockedError{Op: "terminate", Service: name, Blockers: withoutLookup(s.Blockers()), Cause: ctx.Err()}
	}
	return terminateResult{Service: name, Freed: true}, nil
}

// withoutLookup drops the reference our own Lookup holds from a report.
func withoutLookup(bl []driver.Blocker) []driver.Blocker {
	out := bl[:0:0]
	for _, b := range bl {
		if strings.Contains(b.What, "lookup") {
			continue
		}
		out = append(out, b)
	}
	return out
}

func adminUnload(ctx context.Context, r *driver.Registry, args unloadArgs) (unloadResult, error) {
	if args.Driver == "" {
		return unloadResult{}, errors.New("unload: no driver named")
	}
	if args.Timeout <= 0 {
		args.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, args.Timeout)
	defer cancel()
	if err := r.Unload(ctx, args.Driver); err != nil {
		return unloadResult{Driver: args.Driver}, err
	}
	return unloadResult{Driver: args.Driver}, nil
}

// adminBlockers reports what keeps the instances of a driver (or, with no
// driver, every terminated service) alive right now.
func adminBlockers(r *driver.Registry, driverName string) []blockerEntry {
	out := []blockerEntry{}
	for _, s := range r.Services() {
		if driverName != "" {
			if p := s.Personality(); p == nil || p.Name != driverName {
				continue
			}
		} else if s.State().Active {
			continue
		}
		for _, b := range s.Blockers() {
			out = append(out, blockerEntry{Service: b.Service, What: b.What, Stacks: append([]string{}, b.Stacks...)})
		}
	}
	return out
}

func adminLeaks(args leaksArgs) ([]byte, error) {
	var b bytes.Buffer
	var err error
	switch args.Format {
	case "", "text":
		err = refcount.WriteText(&b)
	case "json":
		err = refcount.WriteJSON(&b)
	case "pprof":
		err = refcount.WriteProfile(&b)
	default:
		return nil, fmt.Errorf("leaks: unknown format %q (want text, json or pprof)", args.Format)
	}
	return b.Bytes(), err
}

func adminWhy(r *driver.Registry, args idArgs) (string, error) {
	s, release, ok := r.Lookup(args.ID)
	if !ok {
		return "", fmt.Errorf("%w: id %d", errNoSuchService, args.ID)
	}
	defer release()
	if !s.Traced() {
		return "", fmt.Errorf("why: %s is not traced (start the daemon with DRVKIT_REFTRACE=all or --trace all)", s)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: retain %d\n", s, s.RetainCount()-1) // minus our lookup
	for _, c := range refcount.WhyAlive(&s.Object) {
		if strings.Contains(c.Root, "lookup") {
			continue
		}
		fmt.Fprintf(&b, "  %s\n", c.String())
	}
	return b.String(), nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own types are marshalled
	}
	return b
}
