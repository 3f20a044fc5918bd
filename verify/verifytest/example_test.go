package verifytest_test

import (
	"testing"

	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/verify"
	"github.com/drvkit/drvkit/verify/verifytest"
)

// ExampleRun is the Go test a driver author writes: every schedule a
// subtest, a failure reported with its culprit and a replay command
// (go test ./mydriver -run '^TestMyDriver$' -count=1 -verify.replay='…').
func ExampleRun() {
	// func TestMyDriver(t *testing.T) {
	// 	verifytest.Run(t, mydriver.Entry, verify.Options{Device: verify.USBMassStorage()})
	// }
	_ = func(t *testing.T) { verifytest.Run(t, sg.Entry, verify.Options{Device: &verify.SCSIDisk{}}) }
}
