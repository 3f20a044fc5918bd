package scsi

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Every host status the midlayer reports for a command in flight when a
// device disappears is ErrNoDevice when the device's state shows it gone,
// and not when the device stays; DID_NO_CONNECT and DID_BAD_TARGET always
// are.
func TestHostStatusGoneByDeviceState(t *testing.T) {
	statuses := []uint16{hostAbort, hostError, hostReset, hostTimeOut, hostTransportDisrupted,
		hostTransportFailfast, hostTransportMarginal, hostSoftError, hostBusBusy, hostRequeue, hostImmRetry}
	for _, tc := range []struct {
		state string // "" : the device directory is gone
		gone  bool
	}{
		{"running", false}, {"blocked", false}, {"quiesce", false},
		{"cancel", true}, {"deleted", true}, {"offline", true}, {"transport-offline", true}, {"", true},
	} {
		dir := t.TempDir()
		stateFile := filepath.Join(dir, "state")
		if tc.state != "" {
			require.NoError(t, os.WriteFile(stateFile, []byte(tc.state+"\n"), 0o644))
		}
		for _, h := range statuses {
			he := &HostError{Host: h}
			he.State, he.Gone = deviceGone(stateFile, 0)
			require.Equal(t, tc.gone, errors.Is(he, ErrNoDevice), "%s with state %q", hostName(h), tc.state)
			require.True(t, errors.Is(he, ErrTransport))
			if tc.state != "" {
				require.Contains(t, he.Error(), "device state "+tc.state)
			}
		}
	}
	for _, h := range []uint16{hostNoConnect, hostBadTarget} {
		require.ErrorIs(t, &HostError{Host: h}, ErrNoDevice, hostName(h))
	}
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
