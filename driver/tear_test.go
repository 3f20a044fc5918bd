//go:build !race

package driver_test

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// naive is what Monitored replaces: a variable written by one goroutine and
// read by another without synchronization.
var naive reading

// The companion of TestEPICSNoTornReads: the same workload on a plain
// shared variable does tear. It races on purpose, so it is built only
// without -race.
func TestNaiveSharedVariableTears(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs two threads to tear")
	}
	naive = makeReading(0)
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for seq := uint64(1); !stop.Load(); seq++ {
			naive = makeReading(seq)
		}
	}()
	var torn, reads int
	deadline := time.Now().Add(*epicsDuration)
	for torn == 0 && time.Now().Before(deadline) {
		v := naive
		if !v.ok() {
			torn++
		}
		reads++
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("naive variable: %d torn after %d reads", torn, reads)
	require.Positive(t, torn, "expected the unsynchronized variable to tear")
}
