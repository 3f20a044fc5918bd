package lifecycletest_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
)

func TestReadMonitorJSON(t *testing.T) {
	const trace = `{"kind":"kernel","time":1.5,"seq":1,"action":"add","devpath":"/devices/x","subsystem":"usb"}
{"kind":"lifecycle","time":1.6,"seq":2,"step":"publish","service_id":2,"class":"USBDevice","name":"1-1"}
{"kind":"lifecycle","time":1.7,"seq":3,"step":"attach","service_id":2,"class":"USBDevice","name":"1-1","provider_id":1}
{"kind":"lost","count":3}
{"kind":"lifecycle","time":1.8,"seq":7,"step":"start","service_id":3,"class":"Drv","detail":"boom"}
{"kind":"lifecycle","time":1.9,"seq":8,"step":"terminate","service_id":2,"class":"USBDevice","name":"1-1","cause":"unplug","root_cause":"unplug"}
{"kind":"lifecycle","time":1.9,"seq":9,"step":"terminate","service_id":3,"class":"Drv","cause":"provider","root_cause":"unplug"}
`
	evs, err := lifecycletest.ReadMonitorJSON(strings.NewReader(trace))
	require.NoError(t, err)
	require.Equal(t, []driver.LifecycleEvent{
		{Seq: 2, ServiceID: 2, Class: "USBDevice", Name: "1-1", Step: driver.StepPublish},
		{Seq: 3, ServiceID: 2, Class: "USBDevice", Name: "1-1", Step: driver.StepAttach, ProviderID: 1},
		{Seq: 7, ServiceID: 3, Class: "Drv", Step: driver.StepStart, Err: "boom"},
		{Seq: 8, ServiceID: 2, Class: "USBDevice", Name: "1-1", Step: driver.StepTerminate, Cause: driver.CauseUnplug, RootCause: driver.CauseUnplug},
		{Seq: 9, ServiceID: 3, Class: "Drv", Step: driver.StepTerminate, Cause: driver.CauseProviderTerminated, RootCause: driver.CauseUnplug},
	}, evs)
	_, err = lifecycletest.ReadMonitorJSON(strings.NewReader(`{"kind":"lifecycle","step":"terminate","cause":"device removed"}`))
	require.ErrorContains(t, err, `monitor line 1: unknown termination cause "device removed"`)

	_, err = lifecycletest.ReadMonitorJSON(strings.NewReader(`{"kind":"lifecycle","step":"explode"}`))
	require.ErrorContains(t, err, `unknown lifecycle step "explode"`)
	_, err = lifecycletest.ReadMonitorJSON(strings.NewReader("{not json\n"))
	require.ErrorContains(t, err, "monitor line 1")
}

func TestParseStepRoundTrip(t *testing.T) {
	for s := driver.StepPublish; s <= driver.StepFree; s++ {
		got, ok := driver.ParseStep(s.String())
		require.True(t, ok, s.String())
		require.Equal(t, s, got)
	}
	_, ok := driver.ParseStep("step?")
	require.False(t, ok)
}
