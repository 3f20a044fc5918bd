package usb

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSelector(t *testing.T) {
	tests := []struct {
		in      string
		want    Selector
		wantErr string
	}{
		{in: "003/007", want: Selector{Bus: 3, Address: 7}},
		{in: "46f4:0001", want: Selector{Vendor: 0x46f4, Product: 1}},
		{in: "46f4:0001:1-0000:00:04.0-1", want: Selector{Vendor: 0x46f4, Product: 1, Serial: "1-0000:00:04.0-1"}},
		{in: "0/1", wantErr: "want BUS/ADDR"},
		{in: "x/1", wantErr: "want BUS/ADDR"},
		{in: "46f4", wantErr: "want BUS/ADDR or VID:PID"},
		{in: "46f4:zz", wantErr: "4 hex digits"},
		{in: "123456:1", wantErr: "4 hex digits"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSelector(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.in, got.String())
		})
	}
	require.True(t, Selector{Bus: 1, Address: 2}.Matches(DeviceInfo{Bus: 1, Address: 2, Vendor: 9}))
	require.False(t, Selector{Vendor: 1, Product: 2}.Matches(DeviceInfo{Vendor: 1, Product: 3}))
}

func TestInterfaceEndpoint(t *testing.T) {
	i := Interface{Endpoints: []Endpoint{{Address: 0x81, Type: TransferBulk}, {Address: 0x02, Type: TransferBulk}, {Address: 0x83, Type: TransferInterrupt}}}
	e, ok := i.Endpoint(TransferBulk, true)
	require.True(t, ok)
	require.Equal(t, uint8(0x81), e.Address)
	e, ok = i.Endpoint(TransferBulk, false)
	require.True(t, ok)
	require.Equal(t, uint8(0x02), e.Address)
	_, ok = i.Endpoint(TransferIsochronous, true)
	require.False(t, ok)
}

// A device named by bus and address that is not there was unplugged: the
// error matches ErrNoDevice (what a driver reports for an unplugged device)
// and still ErrNotFound; a VID:PID selector finding nothing is only not
// found.
func TestNotFoundErrorByAddressIsNoDevice(t *testing.T) {
	gone := NotFoundError(Selector{Bus: 2, Address: 23})
	require.ErrorIs(t, gone, ErrNoDevice)
	require.ErrorIs(t, gone, ErrNotFound)
	require.Contains(t, (&OpError{Op: "open 002/023", Err: gone}).Error(), "open 002/023: no such device (unplugged before it was opened)")
	none := NotFoundError(Selector{Vendor: 0x1d50, Product: 0x6018})
	require.ErrorIs(t, none, ErrNotFound)
	require.NotErrorIs(t, none, ErrNoDevice)
}
