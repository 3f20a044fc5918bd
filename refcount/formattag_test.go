package refcount

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

type tagHolder struct {
	mu    sync.Mutex
	state int
}

// TestFormatTagPointerByAddress: a pointer tag is reported by type and
// address; its fields are never read (reading them raced with their owner,
// found by the daemon's end-to-end test under -race).
func TestFormatTagPointerByAddress(t *testing.T) {
	h := &tagHolder{state: 42}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 1000; i++ {
			h.mu.Lock()
			h.state++
			h.mu.Unlock()
		}
	}()
	var got string
	for i := 0; i < 100; i++ {
		got = formatTag(h)
	}
	<-done
	// Only the address: not the fields (an address may contain "42").
	require.Equal(t, fmt.Sprintf("*refcount.tagHolder(%p)", h), got)
	require.Equal(t, "refcount.tagValue({3})", formatTag(tagValue{n: 3}), "value tags still show their value")
}

type tagValue struct{ n int }
