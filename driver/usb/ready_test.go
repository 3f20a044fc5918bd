package usb_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
)

// readier is a wrapper like the USB hold's: it records what it readied.
type readier struct {
	usb.Backend
	name  string
	calls *[]string
	err   error
}

func (r *readier) Unwrap() usb.Backend { return r.Backend }

func (r *readier) ReadyClaim(_ context.Context, bus, addr, iface int) error {
	*r.calls = append(*r.calls, r.name)
	if bus != 1 || addr != 4 || iface != 2 {
		return errors.New("wrong numbers")
	}
	return r.err
}

var (
	_ usb.ClaimReadier = (*readier)(nil)
	_ usb.Unwrapper    = (*readier)(nil)
)

func TestReadyClaimWalksTheWrappers(t *testing.T) {
	fake := usbtest.New()
	defer fake.Close()
	j, err := usb.OpenJournal(filepath.Join(t.TempDir(), "j.json"))
	require.NoError(t, err)
	var calls []string
	inner := &readier{Backend: j.Wrap(fake), name: "inner", calls: &calls}
	outer := &readier{Backend: inner, name: "outer", calls: &calls}

	require.NoError(t, usb.ReadyClaim(context.Background(), outer, 1, 4, 2))
	require.Equal(t, []string{"outer", "inner"}, calls, "outermost first, down to the device backend")
	require.Same(t, j, usb.JournalOf(outer), "the journal under other wrappers")
	require.Equal(t, usb.Backend(fake), usb.Innermost(outer))
	require.Nil(t, usb.JournalOf(&readier{Backend: fake, calls: &calls}))

	calls = nil
	outer.err = usb.ErrNoDevice
	require.ErrorIs(t, usb.ReadyClaim(context.Background(), outer, 1, 4, 2), usb.ErrNoDevice)
	require.Equal(t, []string{"outer"}, calls, "the first error stops it")

	require.NoError(t, usb.ReadyClaim(context.Background(), fake, 1, 4, 2), "nothing to ready")
}
