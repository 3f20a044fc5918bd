package host

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := bucket{rate: 10, burst: 3}
	for range 3 {
		require.Zero(t, b.wait(t0), "the burst goes at once")
	}
	require.Equal(t, 100*time.Millisecond, b.wait(t0), "then one every 1/rate")
	// Waited as told: the next token is 100 ms later.
	require.Equal(t, 100*time.Millisecond, b.wait(t0.Add(100*time.Millisecond)))

	l := bucket{rate: 10, burst: 2}
	require.True(t, l.allow(t0))
	require.True(t, l.allow(t0))
	require.False(t, l.allow(t0), "over the burst: dropped")
	require.False(t, l.allow(t0.Add(50*time.Millisecond)))
	require.True(t, l.allow(t0.Add(150*time.Millisecond)), "refilled at rate")
}
