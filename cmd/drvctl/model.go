package main

// The registry as drvctl shows it. The daemon builds this from the live
// registry and sends it as JSON; the CLI renders it. It is also the schema of
// `drvctl inspect -o json`: keys are stable snake_case, and a field never
// changes type (slices are [] rather than null, absent values are zero).

const inspectSchemaVersion = 1

type inspectDoc struct {
	SchemaVersion int            `json:"schema_version"`
	Services      []serviceEntry `json:"services"`
}

type serviceEntry struct {
	ID         uint64         `json:"id"`
	Class      string         `json:"class"`
	Name       string         `json:"name"`
	Driver     string         `json:"driver"` // personality that created it; "" for nubs and clients
	Registered bool           `json:"registered"`
	Matched    bool           `json:"matched"`
	Active     bool           `json:"active"`
	Starting   bool           `json:"starting"` // a driver whose Start has not returned: not offered to applications yet
	Busy       int            `json:"busy"`
	Retain     int            `json:"retain"`
	Providers  []uint64       `json:"providers"`
	Clients    []uint64       `json:"clients"`
	OpenBy     []uint64       `json:"open_by"`
	Properties map[string]any `json:"properties"`
}

// normalize makes every slice and map non-nil so that JSON output keeps its
// types whatever the registry holds.
func (d *inspectDoc) normalize() {
	if d.Services == nil {
		d.Services = []serviceEntry{}
	}
	for i := range d.Services {
		d.Services[i].normalize()
	}
}

func (s *serviceEntry) normalize() {
	if s.Providers == nil {
		s.Providers = []uint64{}
	}
	if s.Clients == nil {
		s.Clients = []uint64{}
	}
	if s.OpenBy == nil {
		s.OpenBy = []uint64{}
	}
	if s.Properties == nil {
		s.Properties = map[string]any{}
	}
}

// monitorEvent is one line of `drvctl monitor`: a kernel uevent as the
// daemon received it, or one lifecycle step of a service.
type monitorEvent struct {
	Kind string  `json:"kind"` // "kernel", "lifecycle", "lost" (--replay: the history had dropped Count events) or "warning" (the kernel dropped uevents: Detail says so, Count events were resynced)
	Time float64 `json:"time"` // seconds on CLOCK_MONOTONIC, as udevadm prints
	// Seq numbers the daemon's events from 1, kernel and lifecycle alike,
	// in the order they happened: a gap means events were lost.
	Seq uint64 `json:"seq,omitempty"`

	// kernel
	Action    string            `json:"action,omitempty"`
	Devpath   string            `json:"devpath,omitempty"`
	Subsystem string            `json:"subsystem,omitempty"`
	Seqnum    uint64            `json:"seqnum,omitempty"`
	Env       map[string]string `json:"env,omitempty"`

	// lifecycle
	Step      string `json:"step,omitempty"`
	ServiceID uint64 `json:"service_id,omitempty"`
	Class     string `json:"class,omitempty"`
	Name      string `json:"name,omitempty"`
	Detail    string `json:"detail,omitempty"`
	Provider  uint64 `json:"provider_id,omitempty"` // attach and detach
	Score     int    `json:"score,omitempty"`       // probe
	// terminate: why (driver.Cause's short text) and the root cause of the
	// termination; they differ when it reached the service by cascade.
	Cause     string `json:"cause,omitempty"`
	RootCause string `json:"root_cause,omitempty"`

	// lost
	Count uint64 `json:"count,omitempty"`
}
