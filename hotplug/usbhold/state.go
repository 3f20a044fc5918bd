package usbhold

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/drvkit/drvkit/internal/statefile"
)

// stateVersion versions the state file.
const stateVersion = 1

// State is what a hold has changed in the kernel and not yet undone: the
// record a daemon that was killed leaves for [Recover].
type State struct {
	Version int `json:"version"`
	// Gated are the root hubs whose interface_authorized_default the hold
	// set to 0 (it was 1).
	Gated []string `json:"gated,omitempty"`
	// Held are the interfaces kept from the kernel's drivers for a
	// personality.
	Held []Held `json:"held,omitempty"`
}

// Held is one interface kept from the kernel's drivers, with its device's
// identity at the time: an interface of the same name on a device plugged
// later is someone else's.
type Held struct {
	Interface   string `json:"interface"` // "2-1:1.0"
	Bus         int    `json:"bus"`
	Address     int    `json:"address"`
	Vendor      uint16 `json:"vendor"`
	Product     uint16 `json:"product"`
	Personality string `json:"personality"` // the one that matched
}

func (s *State) empty() bool { return len(s.Gated) == 0 && len(s.Held) == 0 }

// ErrState wraps a state file that cannot be read or written, or says
// things no hold writes.
var ErrState = errors.New("usb hold state")

// ParseState decodes and checks a state file's contents. Root acts on what
// it says (writes its names into sysfs), so anything a hold would not have
// written is refused.
func ParseState(b []byte) (State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("%w: %w", ErrState, err)
	}
	if s.Version != stateVersion {
		return State{}, fmt.Errorf("%w: version %d (want %d)", ErrState, s.Version, stateVersion)
	}
	seen := map[string]bool{}
	for _, h := range s.Gated {
		if _, ok := rootHubBus(h); !ok || seen[h] {
			return State{}, fmt.Errorf("%w: gated %q: not a root hub, or twice", ErrState, h)
		}
		seen[h] = true
	}
	for i, h := range s.Held {
		bus, _, ok := interfaceBus(h.Interface)
		switch {
		case !ok || seen[h.Interface]:
			return State{}, fmt.Errorf("%w: held %d: %q is not an interface name, or twice", ErrState, i, h.Interface)
		case h.Bus != bus || h.Address < 1 || h.Address > 255:
			return State{}, fmt.Errorf("%w: held %d: bus %d address %d do not fit %s", ErrState, i, h.Bus, h.Address, h.Interface)
		}
		seen[h.Interface] = true
	}
	return s, nil
}

// ReadState reads the state file at path; a missing file is an empty state.
func ReadState(path string) (State, error) {
	b, err := statefile.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return State{Version: stateVersion}, nil
	case err != nil:
		return State{}, fmt.Errorf("%w: %w", ErrState, err)
	}
	s, err := ParseState(b)
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// writeState replaces the file with s, or removes it when s is empty.
func writeState(path string, s State) error {
	if s.empty() {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %w", ErrState, err)
		}
		return nil
	}
	s.Version = stateVersion
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	if err := statefile.WriteFile(path, b); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	return nil
}

func (s *State) held(iface string) int {
	return slices.IndexFunc(s.Held, func(h Held) bool { return h.Interface == iface })
}
