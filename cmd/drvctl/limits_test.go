package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient/server"
)

func TestLimitsFlag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want server.Limits
		err  string
	}{
		{in: "conns=10,conns-per-uid=2", want: server.Limits{MaxConns: 10, MaxConnsPerUID: 2}},
		{in: "handles=1, idle-timeout=off,frame-timeout=2s", want: server.Limits{MaxHandles: 1, IdleTimeout: -1, FrameTimeout: 2 * time.Second}},
		{in: "waiting-opens=3,waiting-opens-total=4,incomplete=5", want: server.Limits{MaxWaitingOpens: 3, MaxWaitingOpensTotal: 4, MaxIncomplete: 5}},
		{in: "handles-per-uid=7,inflight-per-uid=8", want: server.Limits{MaxHandlesPerUID: 7, MaxInflightPerUID: 8}},
		{in: "conns=0", err: "want a whole number from 1 to 1048576"},
		{in: "conns=-1", err: "want a whole number"},
		{in: "conns=4294967296", err: "want a whole number"},
		{in: "handles=1e3", err: "want a whole number"},
		{in: "idle-timeout=0s", err: "want off or a duration from 10ms to 24h0m0s"},
		{in: "frame-timeout=1000h", err: "want off or a duration"},
		{in: "sockets=3", err: `unknown limit "sockets"`},
		{in: "conns", err: `"conns" is not key=value`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var f limitsFlag
			err := f.Set(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, f.l)
			var again limitsFlag
			require.NoError(t, again.Set(f.String()), "String round-trips")
			require.Equal(t, f.l, again.l)
		})
	}
}

func TestServeDurationRanges(t *testing.T) {
	ok := serveOptions{termTimeout: 10 * time.Second, closeTimeout: 15 * time.Second}
	require.NoError(t, checkServeDurations(ok))
	bad := ok
	bad.closeTimeout = 0
	require.EqualError(t, checkServeDurations(bad), "--shutdown-timeout 0s: want a duration from 10ms to 24h0m0s")
	bad = ok
	bad.termTimeout = -time.Second
	require.ErrorContains(t, checkServeDurations(bad), "--terminate-timeout -1s")
}
