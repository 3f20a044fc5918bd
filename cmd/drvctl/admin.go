package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/userclient"
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
	opHistory   = "monitor-history"
)

// historyResult is the monitor's replay buffer.
type historyResult struct {
	Events  []monitorEvent `json:"events"`
	Dropped uint64         `json:"dropped"`
}

// errNoSuchService is returned for an ID the registry does not know.
var errNoSuchService = errors.New("no such service")

// notFoundError is an ID or a driver name the daemon does not know. It
// travels as the no_service code (errors.Is userclient.ErrNoService) with
// its message alone, which drvctl shows as a command-line error (exit 2).
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }

func (e *notFoundError) Is(target error) bool {
	return target == errNoSuchService || target == userclient.ErrNoService
}

type idArgs struct {
	ID uint64 `json:"id"`
}

type unloadArgs struct {
	Driver  string        `json:"driver"`
	Timeout time.Duration `json:"timeout"`
	Force   bool          `json:"force,omitempty"` // unload even if instances remain
}

type leaksArgs struct {
	Format string `json:"format"` // text, json, pprof
	All    bool   `json:"all"`    // every live object, not only the leaked ones
	// The page of objects detailed (refcount.Page); the summaries cover
	// every object. Limit 0: every one.
	Limit int    `json:"limit,omitempty"`
	After uint64 `json:"after,omitempty"`
}

// defaultLeaksLimit bounds a report's detailed objects unless asked
// otherwise: each is several kilobytes with its stacks, so every live
// object of a host with 100k devices would be hundreds of megabytes.
const defaultLeaksLimit = 1000

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
	Driver    string `json:"driver"`
	Forced    bool   `json:"forced,omitempty"`    // unloaded by --force with instances left
	Remaining int    `json:"remaining,omitempty"` // those instances
}

// findService returns the service with that ID, including one terminated
// but not yet freed (the ones worth asking about), without taking a
// reference: holding one would itself keep the service alive. Every use
// below tolerates the service being freed meanwhile (a freed service has no
// blockers, and terminating it again is a no-op).
func findService(r *driver.Registry, id uint64) (*driver.Service, error) {
	for _, s := range r.Services() {
		if s.ID() == id {
			return s, nil
		}
	}
	return nil, &notFoundError{msg: fmt.Sprintf("no service with ID %d (see drvctl inspect)", id)}
}

// errRefused marks an administrative call the daemon will not do, however
// privileged the caller: terminating the registry root, say.
var errRefused = errors.New("refused")

// refusedError says which service an operation will not touch and why.
type refusedError struct {
	op, service, why string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("refusing to %s %s: %s", e.op, e.service, e.why)
}
func (e *refusedError) Unwrap() error { return errRefused }

// infrastructure says why a service is part of drvkit itself rather than a
// device, a driver or a client — terminating it would break the daemon,
// not free a device — or "" if it is not. The registry root is; pseudo-
// services that are not in the registry (the monitor stream) never reach
// here: findService does not know them.
func infrastructure(r *driver.Registry, s *driver.Service) string {
	if s == r.Root() {
		return "it is the registry root (every device hangs under it; terminating it would leave a daemon that terminates each device as it arrives): stop the daemon instead (systemctl stop drvkit, or SIGTERM)"
	}
	if why, ok := infraClasses[s.Class()]; ok {
		return why
	}
	return ""
}

// infraClasses are the classes of services drvkit creates for itself, with
// why they may not be terminated; a part of the daemon that publishes one
// registers it here.
var infraClasses = map[string]string{}

// pseudoServices are the IDs of services that are not in the registry but
// that drvctl shows (the monitor stream), with what to do instead.
var pseudoServices = map[uint64]string{
	monitorID: "it is a drvctl monitor stream, not a registry service: end the monitor (Ctrl-C) instead",
}

// adminTerminate terminates a service and waits for its free; past the
// timeout it says what still holds it. It refuses drvkit's own services.
func adminTerminate(ctx context.Context, r *driver.Registry, args idArgs, timeout time.Duration) (terminateResult, error) {
	if why, ok := pseudoServices[args.ID]; ok {
		return terminateResult{}, &refusedError{op: "terminate", service: fmt.Sprintf("service %d", args.ID), why: why}
	}
	s, err := findService(r, args.ID)
	if err != nil {
		return terminateResult{}, err
	}
	if why := infrastructure(r, s); why != "" {
		return terminateResult{}, &refusedError{op: "terminate", service: s.String(), why: why}
	}
	name := s.String()
	s.TerminateWith(driver.CauseAdmin)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case <-s.Done():
		return terminateResult{Service: name, Freed: true}, nil
	case <-ctx.Done():
	}
	bl := s.Blockers()
	if len(bl) == 0 { // freed just now
		return terminateResult{Service: name, Freed: true}, nil
	}
	return terminateResult{Service: name}, &driver.BlockedError{Op: "terminate", Service: name, Blockers: bl, Cause: ctx.Err()}
}

func adminUnload(ctx context.Context, r *driver.Registry, args unloadArgs) (unloadResult, error) {
	if args.Driver == "" {
		return unloadResult{}, errors.New("no driver named")
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

// adminLeaks reports the objects that should be gone: every live traced
// object except the active services of the registry (a terminated service
// not yet freed, an object no service owns). With All, every live object.
func adminLeaks(r *driver.Registry, args leaksArgs) ([]byte, error) {
	objs := leakedObjects(r, args.All)
	if args.Limit < 0 {
		return nil, fmt.Errorf("limit %d: want 0 (every object) or more", args.Limit)
	}
	rep := refcount.NewReportPage(objs, refcount.Page{After: args.After, Limit: args.Limit})
	var b bytes.Buffer
	var err error
	switch args.Format {
	case "", "text":
		b.WriteString(leaksHeadline(r, len(objs), args.All))
		var body bytes.Buffer
		err = rep.WriteText(&body)
		// The report's own first line counts "live objects" in the words
		// of the refcount package; the headline above says it for an
		// operator.
		_, rest, _ := bytes.Cut(body.Bytes(), []byte("\n"))
		b.Write(rest)
		if err == nil && rep.NextAfter != 0 {
			all := ""
			if args.All {
				all = " --all"
			}
			fmt.Fprintf(&b, "next page: drvctl leaks%s --limit %d --after %d\n", all, args.Limit, rep.NextAfter)
		}
	case "json":
		err = rep.WriteJSON(&b)
	case "pprof":
		err = rep.WriteProfile(&b)
	default:
		return nil, fmt.Errorf("unknown format %q (want text, json or pprof)", args.Format)
	}
	return b.Bytes(), err
}

// leaksHeadline is the first line of drvctl leaks: what was counted, in
// terms of services and references.
func leaksHeadline(r *driver.Registry, n int, all bool) string {
	alive, terminating := 0, 0
	for _, s := range r.Services() {
		if s.State().Active {
			alive++
		} else {
			terminating++
		}
	}
	if all {
		return fmt.Sprintf("%d traced object(s) hold references (%d active service(s), %d terminating)\n", n, alive, terminating)
	}
	if n == 0 {
		return fmt.Sprintf("no leaks: every terminated service was freed and every traced reference belongs to one of the %d active service(s)\n", alive)
	}
	return fmt.Sprintf("%d object(s) should be gone: terminated services not yet freed (%d) and objects no active service owns, with who holds their references (%d active service(s))\n", n, terminating, alive)
}

// leakedObjects is what `drvctl leaks` lists; with all, every live traced
// object.
func leakedObjects(r *driver.Registry, all bool) []*refcount.Object {
	if all {
		return refcount.LiveObjects()
	}
	return r.LeakSuspects()
}

func adminWhy(r *driver.Registry, args idArgs) (string, error) {
	s, err := findService(r, args.ID)
	if err != nil {
		return "", err
	}
	if !s.Traced() {
		return "", fmt.Errorf("%s is not traced (start the daemon with --trace all or DRVKIT_REFTRACE=all)", s)
	}
	var b strings.Builder
	st := s.State()
	fmt.Fprintf(&b, "%s: retain %d, %s\n", s, s.RetainCount(), map[bool]string{true: "active", false: "terminated"}[st.Active])
	writeWhy(&b, refcount.WhyAlive(s.RefObject()), refcount.StructuralHolders(s.RefObject()))
	return b.String(), nil
}

// writeWhy writes the owning chains, each with the frame to blame for its
// root's reference, then the structural references as one line of
// context: they say where the service hangs in the registry, not who keeps
// it.
func writeWhy(b *strings.Builder, chains, structural []refcount.Chain) {
	if len(chains) == 0 {
		b.WriteString("  no chain from a root: held only through a cycle (see drvctl leaks)\n")
	}
	for _, c := range chains {
		fmt.Fprintf(b, "  %s\n", c.String())
		if c.Site.Func != "" {
			fmt.Fprintf(b, "      root's reference taken at %s\n", c.Site.Short())
		}
	}
	if len(structural) > 0 {
		parts := make([]string, len(structural))
		for i, c := range structural {
			parts[i] = c.Root
		}
		fmt.Fprintf(b, "  structural (context, not owning): %s\n", strings.Join(parts, ", "))
	}
}
