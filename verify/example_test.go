package verify_test

import (
	"context"
	"fmt"

	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/verify"
)

// ExampleVerify verifies the sg driver on a simulated SCSI disk at two
// steps against three fault kinds, then prints what was covered.
func ExampleVerify() {
	rep, err := verify.Verify(context.Background(), sg.Entry, verify.Options{
		Device: &verify.SCSIDisk{Disk: verify.DiskSpec{Vendor: "ACME", Model: "DISK", Blocks: 128}},
		Steps:  []verify.Step{verify.StepStart, verify.StepStop},
		Kinds:  []string{"unplug", "panic", "io-error"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("passed:", rep.Passed())
	for _, p := range rep.Pairs {
		fmt.Printf("%s@%s: %s\n", p.Kind, p.Step, p.Status)
	}
	// Output:
	// passed: true
	// unplug@start: covered
	// panic@start: covered
	// io-error@start: covered
	// unplug@stop: covered
	// panic@stop: covered
	// io-error@stop: covered
}

// ExampleParseSchedule reads the schedule a failure prints.
func ExampleParseSchedule() {
	s, err := verify.ParseSchedule("faults=unplug@start,panic@stop+1 teardown=app-kill,unplug io=1ms procs")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Faults[1].Kind, s.Faults[1].Step, s.Faults[1].Skip, s.Teardown, s.IO, s.Procs)
	fmt.Println(s)
	_, err = verify.ParseSchedule("faults=melt@start")
	fmt.Println(err)
	// Output:
	// panic stop 1 [app-kill unplug] 1ms true
	// faults=unplug@start,panic@stop+1 teardown=app-kill,unplug io=1ms procs
	// bad schedule: fault "melt@start": unknown fault kind "melt"
}

// ExampleRegisterFault adds a fault kind: here, an administrator's
// terminate of the nub under the driver instead of the instance.
func ExampleRegisterFault() {
	err := verify.RegisterFault(verify.FaultKind{
		Name:   "example-nub-terminate",
		Doc:    "the driver's provider is terminated by an administrator",
		Manual: true, // only where a schedule names it
		Inject: func(r *verify.Trial, at verify.Site, _ verify.Fault) error {
			if at.Service != nil {
				if provs := at.Service.Providers(); len(provs) > 0 {
					r.Go(provs[0].Terminate)
				}
			}
			return nil
		},
	})
	fmt.Println(err)
	// Output: <nil>
}
