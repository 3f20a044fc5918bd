package scsi

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSense(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    Sense
		wantErr bool
	}{
		{
			name: "fixed medium error with information",
			in:   []byte{0xf0, 0, 0x03, 0, 0, 0x10, 0, 10, 0, 0, 0, 0, 0x11, 0x00, 0, 0, 0, 0},
			want: Sense{ResponseCode: 0x70, Key: SenseMediumError, ASC: 0x11, Information: 0x1000, InfoValid: true},
		},
		{
			name: "fixed deferred with ILI",
			in:   []byte{0x71, 0, 0x23, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x0c, 0x02, 0, 0, 0, 0},
			want: Sense{ResponseCode: 0x71, Deferred: true, ILI: true, Key: SenseMediumError, ASC: 0x0c, ASCQ: 0x02},
		},
		{
			name: "fixed short: key only",
			in:   []byte{0x70, 0, 0x02},
			want: Sense{ResponseCode: 0x70, Key: SenseNotReady},
		},
		{
			name: "fixed additional length hides stale bytes",
			in:   []byte{0x70, 0, 0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0x24, 0, 0xff},
			want: Sense{ResponseCode: 0x70, Key: SenseIllegalRequest},
		},
		{
			name: "descriptor with information descriptor",
			in:   []byte{0x72, 0x03, 0x11, 0x00, 0, 0, 0, 12, 0x00, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34},
			want: Sense{ResponseCode: 0x72, Descriptor: true, Key: SenseMediumError, ASC: 0x11, Information: 0x1234, InfoValid: true},
		},
		{
			name: "descriptor truncated descriptor is ignored",
			in:   []byte{0x72, 0x05, 0x24, 0x00, 0, 0, 0, 32, 0x00, 0x0a, 0x80},
			want: Sense{ResponseCode: 0x72, Descriptor: true, Key: SenseIllegalRequest, ASC: 0x24},
		},
		{name: "empty", in: nil, wantErr: true},
		{name: "fixed too short", in: []byte{0x70, 0}, wantErr: true},
		{name: "descriptor too short", in: []byte{0x72, 0, 0}, wantErr: true},
		{name: "unknown response code", in: []byte{0x7f, 0, 0, 0}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSense(tt.in)
			if tt.wantErr {
				require.ErrorIs(t, err, ErrBadSense)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestSenseErrorIs(t *testing.T) {
	tests := []struct {
		key  SenseKey
		want error
	}{
		{SenseNotReady, ErrNotReady},
		{SenseMediumError, ErrMediumError},
		{SenseIllegalRequest, ErrIllegalRequest},
		{SenseUnitAttention, ErrUnitAttention},
		{SenseHardwareError, ErrHardwareError},
		{SenseDataProtect, ErrDataProtect},
		{SenseAbortedCommand, ErrAbortedCommand},
	}
	all := []error{ErrNotReady, ErrMediumError, ErrIllegalRequest, ErrUnitAttention, ErrHardwareError, ErrDataProtect, ErrAbortedCommand}
	for _, tt := range tests {
		t.Run(tt.key.String(), func(t *testing.T) {
			var err error = &OpError{Op: "wrap", Err: &SenseError{Op: "READ(10)", Sense: Sense{Key: tt.key, ASC: 0x11}}}
			require.ErrorIs(t, err, tt.want)
			require.ErrorIs(t, err, ErrCheckCondition)
			for _, other := range all {
				if other != tt.want {
					require.False(t, errors.Is(err, other), "%v must not match %v", err, other)
				}
			}
			var se *SenseError
			require.ErrorAs(t, err, &se)
			require.Equal(t, uint8(0x11), se.ASC)
		})
	}
}

func TestSenseErrorMessage(t *testing.T) {
	err := &SenseError{Op: "READ(10)", Sense: Sense{Key: SenseMediumError, ASC: 0x11, Information: 42, InfoValid: true}}
	require.Equal(t, "READ(10): MEDIUM ERROR (ASC/ASCQ 0x11/0x00 unrecovered read error) info=42", err.Error())
}

func TestStatusError(t *testing.T) {
	require.ErrorIs(t, &StatusError{Op: "x", Status: StatusBusy}, ErrBusy)
	require.ErrorIs(t, &StatusError{Op: "x", Status: StatusTaskSetFull}, ErrBusy)
	require.ErrorIs(t, &StatusError{Op: "x", Status: StatusReservationConflict}, ErrReservationHeld)
	require.NotErrorIs(t, &StatusError{Op: "x", Status: StatusBusy}, ErrReservationHeld)
	require.Equal(t, "x: status BUSY", (&StatusError{Op: "x", Status: StatusBusy}).Error())
}
