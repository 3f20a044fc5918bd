package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/drvkit/drvkit/userclient/server"
)

// drvctl status: is the daemon up, which version, since when, and the
// counts an operator checks first — as systemctl status does for a unit.

const (
	opStatus            = "status"
	statusSchemaVersion = 1
)

func init() {
	register(&command{name: "status", summary: "daemon health: version, uptime, devices, drivers, user clients, rejected uevents, leaks", setup: setupStatus})
}

type statusDoc struct {
	SchemaVersion int         `json:"schema_version"`
	Version       versionInfo `json:"version"`
	PID           int         `json:"pid"`
	Started       string      `json:"started"` // RFC 3339, UTC
	UptimeSeconds int64       `json:"uptime_seconds"`
	Bus           string      `json:"bus"` // "kernel" (netlink) or "simulated"
	Devices       int         `json:"devices"`
	Drivers       int         `json:"drivers"`          // loaded
	Instances     int         `json:"driver_instances"` // driver instances alive
	UserClients   int         `json:"user_clients"`
	Terminating   int         `json:"terminating"` // terminated services not yet freed
	Connections   int         `json:"connections"`
	// RejectedUevents counts datagrams on the uevent socket that were not
	// the kernel's (forgeries) or were malformed; Overflows the times the
	// kernel dropped uevents.
	RejectedUevents uint64 `json:"rejected_uevents"`
	Overflows       uint64 `json:"uevent_overflows"`
	// Leaks counts the objects drvctl leaks reports: terminated services
	// not freed and references no active service owns.
	Leaks int `json:"leaks"`
}

func (d *daemon) status(now time.Time) statusDoc {
	st := statusDoc{SchemaVersion: statusSchemaVersion, Version: buildVersion(), PID: pid(),
		Started: d.started.UTC().Format(time.RFC3339), UptimeSeconds: int64(now.Sub(d.started) / time.Second), Bus: "kernel"}
	if d.sim != nil {
		st.Bus = "simulated"
	}
	root := d.reg.Root()
	for _, s := range d.reg.Services() {
		if !s.State().Active {
			st.Terminating++
			continue
		}
		switch {
		case s == root:
		case s.Personality() != nil:
			st.Instances++
		case s.Class() == server.UserClientClass:
			st.UserClients++
		default:
			st.Devices++
		}
	}
	d.mu.Lock()
	st.Drivers = len(d.loaded)
	d.mu.Unlock()
	if d.srv != nil {
		st.Connections = d.srv.Stats().Conns
	}
	if d.netlink != nil {
		ns := d.netlink.Stats()
		st.RejectedUevents = ns.NotKernel + ns.NoCreds + ns.NotRoot + ns.Malformed
		st.Overflows = ns.Overflows
	}
	st.Leaks = len(leakedObjects(d.reg, false))
	return st
}

func setupStatus(fs *flag.FlagSet, e *env) func([]string) error {
	sock := socketFlag(fs, e)
	format := outputFlag(fs, "text", "json")
	pretty := prettyFlag(fs)
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		f, err := format()
		if err != nil {
			return err
		}
		var st statusDoc
		if _, err := call(context.Background(), sock(), opStatus, nil, &st); err != nil {
			return err
		}
		if f == "json" {
			return writeJSONValue(e.stdout, &st, *pretty)
		}
		return writeStatus(e.stdout, sock(), &st)
	}
}

func writeStatus(w io.Writer, socket string, st *statusDoc) error {
	leaks := "none"
	if st.Leaks > 0 {
		leaks = fmt.Sprintf("%d (see drvctl leaks)", st.Leaks)
	}
	_, err := fmt.Fprintf(w, `drvkit daemon: running (pid %d) on %s
  version:          %s
  since:            %s (up %s)
  bus:              %s
  devices:          %d
  drivers:          %d loaded, %d instance(s)
  user clients:     %d
  terminating:      %d
  connections:      %d
  rejected uevents: %d (kernel overflows: %d)
  leaks:            %s
`, st.PID, esc(socket), st.Version, st.Started, time.Duration(st.UptimeSeconds)*time.Second, st.Bus, st.Devices,
		st.Drivers, st.Instances, st.UserClients, st.Terminating, st.Connections, st.RejectedUevents, st.Overflows, leaks)
	return err
}
