package lifecycletest_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
)

// writeMonitorJSON writes events as `drvctl monitor -o json` does (the
// fields ReadMonitorJSON reads; the daemon adds the time).
func writeMonitorJSON(evs []driver.LifecycleEvent) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, e := range evs {
		line := map[string]any{"kind": "lifecycle", "seq": e.Seq, "step": e.Step.String(),
			"service_id": e.ServiceID, "class": e.Class, "name": e.Name}
		if e.ProviderID != 0 {
			line["provider_id"] = e.ProviderID
		}
		if e.Score != 0 {
			line["score"] = e.Score
		}
		if e.Err != "" {
			line["detail"] = e.Err
		}
		if e.Cause != driver.CauseUnknown {
			line["cause"] = e.Cause.Text()
		}
		if e.RootCause != driver.CauseUnknown {
			line["root_cause"] = e.RootCause.Text()
		}
		_ = enc.Encode(line)
	}
	return b.Bytes()
}

// FuzzReadMonitorJSON: any input gives events or an error naming the line,
// never a panic; the events it gives are well formed and survive being
// written again and read back.
func FuzzReadMonitorJSON(f *testing.F) {
	f.Add([]byte(`{"kind":"lifecycle","seq":2,"step":"publish","service_id":2,"class":"USBDevice","name":"1-1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		evs, err := lifecycletest.ReadMonitorJSON(bytes.NewReader(data))
		if err != nil {
			require.True(t, strings.HasPrefix(err.Error(), "monitor line "), "%v", err)
			return
		}
		for _, e := range evs {
			require.NotZero(t, e.Seq)
			step, ok := driver.ParseStep(e.Step.String())
			require.True(t, ok)
			require.Equal(t, e.Step, step)
			if e.Err != "" {
				require.Contains(t, []driver.Step{driver.StepProbe, driver.StepStart}, e.Step)
			}
		}
		_ = lifecycletest.Validate(evs, false) // a real trace or not: no panic
		again, err := lifecycletest.ReadMonitorJSON(bytes.NewReader(writeMonitorJSON(evs)))
		require.NoError(t, err)
		require.Equal(t, len(evs), len(again))
		if len(evs) > 0 {
			require.Equal(t, evs, again)
		}
	})
}

// A trace recorded from a registry reads back as it was recorded (less
// the fields the monitor does not carry).
func TestMonitorJSONRoundTrip(t *testing.T) {
	evs := []driver.LifecycleEvent{
		{Seq: 1, ServiceID: 2, Class: "USBDevice", Name: "1-1", Step: driver.StepPublish},
		{Seq: 2, ServiceID: 2, Class: "USBDevice", Name: "1-1", Step: driver.StepAttach, ProviderID: 1},
		{Seq: 3, ServiceID: 3, Class: "Drv", Step: driver.StepProbe, ProviderID: 2, Score: 70},
		{Seq: 4, ServiceID: 3, Class: "Drv", Step: driver.StepStart, Err: "no medium"},
	}
	got, err := lifecycletest.ReadMonitorJSON(bytes.NewReader(writeMonitorJSON(evs)))
	require.NoError(t, err)
	require.Equal(t, evs, got)
}

func TestReadMonitorJSONLongLine(t *testing.T) {
	long := `{"kind":"kernel","x":"` + strings.Repeat("a", 5<<20) + `"}`
	_, err := lifecycletest.ReadMonitorJSON(strings.NewReader("{}\n" + long + "\n"))
	require.ErrorContains(t, err, "monitor line 2")
}
