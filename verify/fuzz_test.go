package verify_test

import (
	"reflect"
	"testing"

	"github.com/drvkit/drvkit/verify"
)

// FuzzParseSchedule: the schedule parser refuses what it cannot read and
// never panics; what it reads, String writes back to the same schedule.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{
		"faults= teardown= io=1ms",
		"faults=unplug@start,panic@stop+1 teardown=app-kill,unplug io=1ms procs",
		"faults=block@open+2(unload:vendord) teardown=terminate:vendord io=684us jitter=0.25 seed=42",
		"faults=no-device@call teardown=app-kill,unplug io=2ms procs",
		"faults=driver-kill@call teardown=app-kill,terminate,unplug io=1ms direct",
		"faults=app-kill@stop io=1ms procs direct seed=3", "direct=1", "direct direct",
		"faults=melt@start", "io=-1s", "procs=1", "faults=unplug@start+x", "seed=1 seed=2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := verify.ParseSchedule(text)
		if err != nil {
			return
		}
		again, err := verify.ParseSchedule(s.String())
		if err != nil {
			t.Fatalf("%q read as %q, which does not parse: %v", text, s, err)
		}
		if !reflect.DeepEqual(s, again) {
			t.Fatalf("%q read as %#v, written %q, read back as %#v", text, s, s.String(), again)
		}
	})
}
