package ancestry

import (
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseOrigin(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         string
		id, parent uint64
	}{
		{"main", "goroutine 1 [running]:\nmain.main()\n\t/x/main.go:5 +0x1d\n", 1, 0},
		{"child", "goroutine 42 [running]:\nmain.f()\n\t/x/main.go:9 +0x1d\ncreated by main.main in goroutine 7\n\t/x/main.go:5 +0x25\n", 42, 7},
		{"pre-1.21 format", "goroutine 42 [running]:\nmain.f()\ncreated by main.main\n\t/x/main.go:5\n", 42, 0},
		{"garbage", "not a stack", 0, 0},
		{"empty", "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, parent := parseOrigin([]byte(tc.in))
			require.Equal(t, tc.id, id)
			require.Equal(t, tc.parent, parent)
		})
	}
}

func TestOriginAndDescent(t *testing.T) {
	me, _ := Current()
	require.NotZero(t, me)
	var wg sync.WaitGroup
	var grandchild, child uint64
	wg.Add(1)
	go func() {
		defer wg.Done()
		child, _ = Current()
		inner := make(chan struct{})
		go func() {
			var p uint64
			grandchild, p = Current()
			require.Equal(t, child, p)
			close(inner)
		}()
		<-inner
	}()
	wg.Wait()
	d, known := DescendsFrom(grandchild, me)
	require.True(t, known)
	require.True(t, d)
	d, known = DescendsFrom(me, grandchild)
	require.False(t, d)
	_ = known
}

func TestLearnAllFindsLiveParents(t *testing.T) {
	me, _ := Current()
	stop := make(chan struct{})
	ids := make(chan uint64)
	go func() { // never calls Current itself
		go func() {
			id, _ := Current()
			ids <- id
			<-stop
		}()
		<-stop
	}()
	gc := <-ids
	defer close(stop)
	d, known := DescendsFrom(gc, me)
	require.False(t, d && known, "the middle goroutine is not known yet")
	LearnAll()
	d, known = DescendsFrom(gc, me)
	require.True(t, known)
	require.True(t, d)
}

func FuzzParseOrigin(f *testing.F) {
	f.Add("goroutine 42 [running]:\nmain.f()\ncreated by main.main in goroutine 7\n\t/x/main.go:5 +0x25\n")
	f.Add("goroutine 1 [running]:\n")
	f.Add("goroutine x [")
	f.Add("\ncreated by  in goroutine 99999999999999999999999")
	f.Fuzz(func(t *testing.T, s string) {
		id, parent := parseOrigin([]byte(s))
		if !strings.HasPrefix(s, "goroutine ") {
			require.Zero(t, id)
		}
		if !strings.Contains(s, " in goroutine ") {
			require.Zero(t, parent)
		}
	})
}
