package lifecycletest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/drvkit/drvkit/driver"
)

// ReadMonitorJSON reads the lifecycle events of a trace recorded by
// `drvctl monitor -o json` (one JSON object per line; kernel events and
// other kinds are skipped), so that a daemon's real trace can be checked
// with Validate, e.g. in the CI of an application that embeds drvkit.
func ReadMonitorJSON(r io.Reader) ([]driver.LifecycleEvent, error) {
	var out []driver.LifecycleEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e struct {
			Kind      string `json:"kind"`
			Seq       uint64 `json:"seq"`
			Step      string `json:"step"`
			ServiceID uint64 `json:"service_id"`
			Class     string `json:"class"`
			Name      string `json:"name"`
			Provider  uint64 `json:"provider_id"`
			Score     int    `json:"score"`
			Detail    string `json:"detail"`
			Cause     string `json:"cause"`
			RootCause string `json:"root_cause"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return out, fmt.Errorf("monitor line %d: %w", line, err)
		}
		if e.Kind != "lifecycle" {
			continue
		}
		step, ok := driver.ParseStep(e.Step)
		if !ok {
			return out, fmt.Errorf("monitor line %d: unknown lifecycle step %q", line, e.Step)
		}
		seq := e.Seq
		if seq == 0 { // older daemons did not number their events
			seq = uint64(len(out) + 1)
		}
		ev := driver.LifecycleEvent{Seq: seq, ServiceID: e.ServiceID, Class: e.Class, Name: e.Name,
			Step: step, ProviderID: e.Provider, Score: e.Score}
		if step == driver.StepProbe || step == driver.StepStart {
			ev.Err = e.Detail
		}
		// Older daemons sent no causes: CauseUnknown.
		for _, c := range []struct {
			text string
			to   *driver.Cause
		}{{e.Cause, &ev.Cause}, {e.RootCause, &ev.RootCause}} {
			if c.text == "" {
				continue
			}
			v, err := driver.ParseCause(c.text)
			if err != nil {
				return out, fmt.Errorf("monitor line %d: %w", line, err)
			}
			*c.to = v
		}
		out = append(out, ev)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("monitor line %d: %w", line+1, err) // e.g. a line over 4 MiB
	}
	return out, nil
}
