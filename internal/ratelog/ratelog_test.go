package ratelog

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLimiter(t *testing.T) {
	l := Limiter{Interval: time.Hour}
	n, ok := l.Allow()
	require.True(t, ok)
	require.Zero(t, n)
	for range 5 {
		_, ok := l.Allow()
		require.False(t, ok)
	}
	l.mu.Lock()
	l.last = time.Now().Add(-2 * time.Hour)
	l.mu.Unlock()
	n, ok = l.Allow()
	require.True(t, ok)
	require.Equal(t, 5, n, "the suppressed count comes with the next line")
}
