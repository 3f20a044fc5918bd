package lazyctx

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type ctxKey struct{}

// A call's context behaves as context.WithCancel's would: it ends with its
// parent or its own end, Err is nil until Done is closed, values and the
// deadline are the parent's, and contexts derived from it follow it.
func TestContext(t *testing.T) {
	closed := func(c context.Context) bool {
		select {
		case <-c.Done():
			return true
		case <-time.After(5 * time.Second):
			return false
		}
	}
	t.Run("own end", func(t *testing.T) {
		parent := context.WithValue(context.Background(), ctxKey{}, "v")
		c := New(parent)
		require.NoError(t, c.Err())
		require.Equal(t, "v", c.Value(ctxKey{}))
		_, ok := c.Deadline()
		require.False(t, ok)
		done := c.Done()
		c.End()
		require.True(t, closed(c))
		require.Equal(t, done, c.Done())
		require.ErrorIs(t, c.Err(), context.Canceled)
	})
	t.Run("parent ends, Done asked first", func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		c := New(parent)
		defer c.End()
		require.True(t, closed(c))
		require.ErrorIs(t, c.Err(), context.DeadlineExceeded)
		dl, ok := c.Deadline()
		require.True(t, ok)
		require.False(t, dl.IsZero())
	})
	t.Run("parent ended, Err asked first", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		c := New(parent)
		defer c.End()
		cancel()
		require.ErrorIs(t, c.Err(), context.Canceled)
		select {
		case <-c.Done(): // Err non-nil: Done is closed
		default:
			t.Fatal("Err is set, Done is open")
		}
	})
	t.Run("ended before Done is asked", func(t *testing.T) {
		c := New(context.Background())
		c.End()
		require.True(t, closed(c))
	})
	t.Run("derived contexts follow", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		defer cancel()
		c := New(parent)
		child, childCancel := context.WithTimeout(c, time.Hour)
		defer childCancel()
		ran := make(chan struct{})
		stopped := context.AfterFunc(c, func() { close(ran) })
		notRun := context.AfterFunc(c, func() { t.Error("stopped AfterFunc ran") })
		require.True(t, notRun())
		require.NoError(t, child.Err())
		cancel() // the parent: through c to the child
		require.True(t, closed(child))
		require.True(t, errors.Is(child.Err(), context.Canceled))
		<-ran
		require.False(t, stopped())
		c.End()
	})
	t.Run("derived after the end", func(t *testing.T) {
		c := New(context.Background())
		c.End()
		child, cancel := context.WithCancel(c)
		defer cancel()
		require.True(t, closed(child))
	})
}

// BenchmarkContext: a call's context that its method never waits on,
// against context.WithCancel on a cancellable parent (what Service.Call
// made before).
func BenchmarkContext(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("lazyctx", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := New(parent)
			_ = c.Err()
			c.End()
		}
	})
	b.Run("WithCancel", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, cancel := context.WithCancel(parent)
			_ = c.Err()
			cancel()
		}
	})
}
