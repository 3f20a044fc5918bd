package main

// The registry as drvctl shows it. The daemon builds this from the live
// registry and sends it as JSON; the CLI renders it. It is also the schema of
// `drvctl inspect -o json`: keys are stable snake_case, a field never
// changes type, and empty fields are left out (no "" or [] placeholders).
//
// Schema version 2 (was 1): empty fields omitted; a driver instance's
// properties are its own (personality, probe_score, provider_class,
// match_category), no longer a copy of its nub's; a user client's are the
// process it serves (pid, uid, gid, comm: administrators only).

const inspectSchemaVersion = 2

type inspectDoc struct {
	SchemaVersion int            `json:"schema_version"`
	Services      []serviceEntry `json:"services"`
}

type serviceEntry struct {
	ID         uint64         `json:"id"`
	Class      string         `json:"class"`
	Name       string         `json:"name,omitempty"`
	Driver     string         `json:"driver,omitempty"` // personality that created it; none for nubs and clients
	Registered bool           `json:"registered"`
	Matched    bool           `json:"matched"`
	Active     bool           `json:"active"`
	Starting   bool           `json:"starting,omitempty"` // a driver whose Start has not returned: not offered to applications yet
	Busy       int            `json:"busy"`
	Retain     int            `json:"retain"`
	Providers  []uint64       `json:"providers,omitempty"`
	Clients    []uint64       `json:"clients,omitempty"`
	OpenBy     []uint64       `json:"open_by,omitempty"`
	Properties map[string]any `json:"properties,omitempty"`
}

// Properties of a driver instance, as ioreg shows IOProbeScore and
// IOProviderClass.
const (
	propPersonality   = "personality"
	propProbeScore    = "probe_score"
	propProviderClass = "provider_class"
	propCategory      = "match_category"
)

// normalize makes the service list non-nil, so that an empty registry is
// "services": [] rather than null.
func (d *inspectDoc) normalize() {
	if d.Services == nil {
		d.Services = []serviceEntry{}
	}
}

// monitorEvent is one line of `drvctl monitor`: a kernel uevent as the
// daemon received it, or one lifecycle step of a service.
type monitorEvent struct {
	Kind string `json:"kind"` // "kernel", "lifecycle", "lost" (--replay: the history had dropped Count events) or "warning" (the kernel dropped uevents: Detail says so, Count events were resynced)
	// Time is CLOCK_MONOTONIC, as udevadm prints; in JSON a string with six
	// decimals ("1011.441741"). Times never go back as Seq goes forward.
	Time monoTime `json:"time"`
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
