package wire

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Match selects services. Empty fields match anything; at least one field
// must be set.
type Match struct {
	ID          uint64            `json:"id,omitempty"`
	Class       string            `json:"class,omitempty"`
	Name        string            `json:"name,omitempty"`
	Personality string            `json:"personality,omitempty"`
	Properties  map[string]string `json:"properties,omitempty"`
}

// IsZero reports whether m sets no field (it would match everything, and
// is refused).
func (m *Match) IsZero() bool {
	return m.ID == 0 && m.Class == "" && m.Name == "" && m.Personality == "" && len(m.Properties) == 0
}

// Matches reports whether s satisfies m (property values compare as text).
func (m *Match) Matches(s ServiceInfo) bool {
	if m.ID != 0 && m.ID != s.ID || m.Class != "" && m.Class != s.Class ||
		m.Name != "" && m.Name != s.Name || m.Personality != "" && m.Personality != s.Personality {
		return false
	}
	for k, v := range m.Properties {
		if s.Properties[k] != v {
			return false
		}
	}
	return true
}

// String shows the fields m sets as key=value pairs, properties last and
// sorted: "class=SCSIDevice vendor=QEMU". Values that need it are quoted.
func (m Match) String() string {
	var b strings.Builder
	add := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		if v == "" || strings.ContainsAny(v, " =\"\\") || strconv.Quote(v) != `"`+v+`"` {
			v = strconv.Quote(v)
		}
		b.WriteString(v)
	}
	if m.ID != 0 {
		add("id", strconv.FormatUint(m.ID, 10))
	}
	if m.Class != "" {
		add("class", m.Class)
	}
	if m.Name != "" {
		add("name", m.Name)
	}
	if m.Personality != "" {
		add("personality", m.Personality)
	}
	for _, k := range slices.Sorted(maps.Keys(m.Properties)) {
		add(k, m.Properties[k])
	}
	if b.Len() == 0 {
		return "(empty match)"
	}
	return b.String()
}

// ServiceInfo describes a service as the policy and the application see it.
type ServiceInfo struct {
	ID          uint64            `json:"id"`
	Class       string            `json:"class"`
	Name        string            `json:"name,omitempty"`
	Personality string            `json:"personality,omitempty"` // the driver (personality) name of a driver instance
	Properties  map[string]string `json:"properties,omitempty"`
}

// String is the service's short name, Class#ID, as drvctl inspect shows it.
func (s ServiceInfo) String() string { return s.Class + "#" + strconv.FormatUint(s.ID, 10) }

// NotificationType names what happened to an open service.
type NotificationType string

// Notification types forwarded from the registry. Driver-defined messages
// carry the driver's own type name.
const (
	ServiceIsTerminated      NotificationType = "ServiceIsTerminated"
	ServiceIsRequestingClose NotificationType = "ServiceIsRequestingClose"
	ServiceWasClosed         NotificationType = "ServiceWasClosed"
)

// Notification is pushed to the application for one open handle.
type Notification struct {
	Type    NotificationType
	Service uint64 // the service it concerns
	Detail  string // human-readable detail, optional
	Data    []byte // driver message payload, optional
	// ServiceIsTerminated and ServiceIsRequestingClose: why Service was
	// terminated, and the cause of the termination that reached it, in
	// the registry's short text form ("unplug", "unload", "admin",
	// "provider", "shutdown", "crashed", "unknown"; see driver.Cause). A service
	// terminated because its provider went has Cause "provider" and the
	// provider's cause as RootCause. Empty on other notifications and
	// from daemons that predate causes.
	Cause, RootCause string
}
