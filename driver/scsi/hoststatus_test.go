package scsi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The mapping of every host status the Linux midlayer defines
// (include/scsi/scsi_status.h), on a device whose sysfs state reads each
// way it can: ErrNoDevice when the state shows the device gone (or the
// status is one of the two that always mean gone), never guessed from the
// status alone; otherwise the status's own class (timeout, busy) or a plain
// transport error. Each case runs through checkState, as SG.Execute does.
func TestHostStatusMapping(t *testing.T) {
	type want struct{ gone, timeout, busy bool }
	statuses := []struct {
		host uint16
		name string
		want // on a device that stays
	}{
		{hostNoConnect, "DID_NO_CONNECT", want{gone: true}},
		{hostBusBusy, "DID_BUS_BUSY", want{busy: true}},
		{hostTimeOut, "DID_TIME_OUT", want{timeout: true}},
		{hostBadTarget, "DID_BAD_TARGET", want{gone: true}},
		{hostAbort, "DID_ABORT", want{}},
		{hostParity, "DID_PARITY", want{}},
		{hostError, "DID_ERROR", want{}},
		{hostReset, "DID_RESET", want{}},
		{hostBadIntr, "DID_BAD_INTR", want{}},
		{hostPassthrough, "DID_PASSTHROUGH", want{}},
		{hostSoftError, "DID_SOFT_ERROR", want{busy: true}},
		{hostImmRetry, "DID_IMM_RETRY", want{busy: true}},
		{hostRequeue, "DID_REQUEUE", want{busy: true}},
		{hostTransportDisrupted, "DID_TRANSPORT_DISRUPTED", want{busy: true}},
		{hostTransportFailfast, "DID_TRANSPORT_FAILFAST", want{}},
		{hostTargetFailure, "DID_TARGET_FAILURE", want{}},
		{hostNexusFailure, "DID_NEXUS_FAILURE", want{}},
		{hostAllocFailure, "DID_ALLOC_FAILURE", want{}},
		{hostMediumError, "DID_MEDIUM_ERROR", want{}},
		{hostTransportMarginal, "DID_TRANSPORT_MARGINAL", want{}},
		{0x15, "unknown", want{}},
		{0xff, "unknown", want{}},
	}
	// Every name the table knows is tested.
	require.Len(t, hostStatuses, 0x15)
	for h := range hostStatuses[1:] {
		require.Equal(t, uint16(h+1), statuses[h].host)
	}
	states := []struct {
		file string // the sysfs state; "-" : the device directory is gone; "" : no state file known
		gone bool
	}{
		{"running", false}, {"created", false}, {"blocked", false}, {"quiesce", false}, {"created-blocked", false},
		{"cancel", true}, {"deleted", true}, {"offline", true}, {"transport-offline", true}, {"-", true},
		{"", false},
	}
	for _, st := range states {
		stateFile := ""
		if st.file != "" {
			stateFile = filepath.Join(t.TempDir(), "state")
			if st.file != "-" {
				require.NoError(t, os.WriteFile(stateFile, []byte(st.file+"\n"), 0o644))
			}
		}
		for _, hs := range statuses {
			name := fmt.Sprintf("%s/state=%q", hs.name, st.file)
			require.Equal(t, hs.name, hostName(hs.host), name)
			he := &HostError{Host: hs.host}
			he.checkState(stateFile, 0)
			gone := hs.gone || st.gone
			require.Equal(t, gone, errors.Is(he, ErrNoDevice), "%s: %v", name, he)
			require.Equal(t, !gone && hs.timeout, errors.Is(he, ErrTimeout), "%s: %v", name, he)
			require.Equal(t, !gone && hs.busy, errors.Is(he, ErrBusy), "%s: %v", name, he)
			require.ErrorIs(t, he, ErrTransport, name)
			require.Contains(t, he.Error(), fmt.Sprintf("host status 0x%02x (%s)", hs.host, hs.name))
			switch st.file {
			case "":
				require.Empty(t, he.State, name)
			case "-":
				require.Contains(t, he.Error(), "device state removed", name)
			default:
				require.Contains(t, he.Error(), "device state "+st.file, name)
			}
		}
	}
	// A driver-only status (the host delivered the command) reads nothing.
	he := &HostError{Driver: driverTimeout}
	he.checkState(filepath.Join(t.TempDir(), "state"), time.Second)
	require.Empty(t, he.State)
	require.ErrorIs(t, he, ErrTimeout)
	require.NotErrorIs(t, he, ErrNoDevice)
	_, gone := deviceGone("", time.Second)
	require.False(t, gone, "no state file known: not guessed")
}

// A device whose state turns to "deleted" while the failed command is
// looked at is gone: the midlayer fails in-flight commands while removing.
func TestDeviceGoneWaitsForTheRemovalToShow(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.WriteFile(stateFile, []byte("running\n"), 0o644))
	go func() {
		time.Sleep(20 * time.Millisecond)
		os.WriteFile(stateFile, []byte("deleted\n"), 0o644)
	}()
	state, gone := deviceGone(stateFile, 5*time.Second)
	require.True(t, gone)
	require.Equal(t, "deleted", state)
	// One that stays running is not gone once settle passed.
	require.NoError(t, os.WriteFile(stateFile, []byte("running\n"), 0o644))
	state, gone = deviceGone(stateFile, 30*time.Millisecond)
	require.False(t, gone)
	require.Equal(t, "running", state)
}
