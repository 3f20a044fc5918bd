package lifecycletest_test

import (
	"testing"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
)

// decode turns bytes into a trace: 3 bytes per event (step, service,
// provider) over a handful of IDs, so that the fuzzer finds orderings.
func decode(data []byte) []driver.LifecycleEvent {
	var evs []driver.LifecycleEvent
	for i := 0; i+2 < len(data); i += 3 {
		e := driver.LifecycleEvent{
			Seq:       uint64(len(evs) + 1),
			Step:      driver.Step(data[i] % 11),
			ServiceID: uint64(data[i+1]%6 + 1),
		}
		if e.Step == driver.StepAttach || e.Step == driver.StepDetach {
			e.ProviderID = uint64(data[i+2]%6 + 1)
		}
		if e.Step == driver.StepFree {
			e.Refs = int(data[i+2] % 2)
		}
		evs = append(evs, e)
	}
	return evs
}

func encode(evs []driver.LifecycleEvent) []byte {
	var b []byte
	for _, e := range evs {
		b = append(b, byte(e.Step), byte(e.ServiceID-1), byte(e.ProviderID-1))
	}
	return b
}

// FuzzValidate: the checker never panics, and a valid trace stays valid
// when a copy of it is appended under fresh IDs.
func FuzzValidate(f *testing.F) {
	f.Add(encode(good()))
	f.Add([]byte{byte(driver.StepFree), 0, 1})
	f.Add([]byte{byte(driver.StepDetach), 1, 0, byte(driver.StepStop), 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		evs := decode(data)
		err := lifecycletest.Validate(evs, true)
		_ = lifecycletest.Validate(evs, false)
		if err != nil {
			return
		}
		// Shift IDs out of the way and append: still valid.
		more := append([]driver.LifecycleEvent(nil), evs...)
		for _, e := range evs {
			e.ServiceID += 100
			if e.ProviderID != 0 {
				e.ProviderID += 100
			}
			e.Seq = uint64(len(more) + 1)
			more = append(more, e)
		}
		if err := lifecycletest.Validate(more, true); err != nil {
			t.Fatalf("valid trace became invalid when repeated: %v", err)
		}
	})
}
