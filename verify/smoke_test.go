package verify_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/verify"
)

func TestSmoke(t *testing.T) {
	rep, err := verify.Verify(context.Background(), usbstorage.Entry, verify.Options{Random: 5, Progress: func(r verify.Result) {
		if r.Failed() {
			t.Logf("%s %s: %v", r.Name, r.Schedule, r.Problems)
		}
	}, Settle: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rep.WriteText(os.Stdout)
}
