package refcount

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// captureErrors installs a handler collecting every *Error for the test.
func captureErrors(t *testing.T) *[]*Error {
	t.Helper()
	var got []*Error
	prev := SetErrorHandler(func(e *Error) { got = append(got, e) })
	t.Cleanup(func() { SetErrorHandler(prev) })
	return &got
}

// traced returns a traced object of a class private to the test.
func traced(t *testing.T, class string, free func()) *Object {
	t.Helper()
	Trace(class)
	o := new(Object)
	o.Init(class, free)
	require.True(t, o.Traced())
	return o
}

//go:noinline
func releaseHere(o *Object) { o.Release() }

//go:noinline
func releaseAgainHere(o *Object) { o.Release() }

//go:noinline
func retainHere(o *Object) { o.Retain() }

//go:noinline
func retainAfterFree(o *Object) { o.Retain() }

//go:noinline
func taggedRetainHere(o *Object, tag any) { o.TaggedRetain(tag) }

//go:noinline
func taggedReleaseHere(o *Object, tag any) { o.TaggedRelease(tag) }

//go:noinline
func taggedReleaseMismatch(o *Object, tag any) { o.TaggedRelease(tag) }

func TestOverReleaseReportsBothStacks(t *testing.T) {
	errs := captureErrors(t)
	frees := 0
	o := traced(t, "OverRelease", func() { frees++ })
	releaseHere(o)
	require.Equal(t, 1, frees)
	releaseAgainHere(o)
	require.Equal(t, 1, frees, "free runs once")
	require.Len(t, *errs, 1)
	e := (*errs)[0]
	require.Equal(t, ErrOverRelease, e.Kind)
	require.Equal(t, o.ID(), e.ID)
	require.Equal(t, "OverRelease", e.Class)
	require.Contains(t, e.Offender.Frames[0].Func, "refcount.releaseAgainHere")
	require.Contains(t, e.Offender.Frames[1].Func, "TestOverReleaseReportsBothStacks")
	require.Equal(t, "freed", e.ConflictWhat)
	require.Contains(t, e.Conflict.Frames[0].Func, "refcount.releaseHere")
	msg := e.Error()
	require.Contains(t, msg, "release below zero: OverRelease#")
	require.Contains(t, msg, "releaseAgainHere")
	require.Contains(t, msg, "freed at refcount.releaseHere errors_test.go:")
	var target *Error
	require.True(t, errors.As(error(e), &target))
}

func TestResurrectionReportsBothStacks(t *testing.T) {
	errs := captureErrors(t)
	o := traced(t, "Resurrect", nil)
	releaseHere(o)
	retainAfterFree(o)
	require.Len(t, *errs, 1)
	e := (*errs)[0]
	require.Equal(t, ErrResurrected, e.Kind)
	require.Contains(t, e.Offender.Frames[0].Func, "refcount.retainAfterFree")
	require.Contains(t, e.Conflict.Frames[0].Func, "refcount.releaseHere")
	require.Equal(t, 0, o.RetainCount(), "a dead object stays dead")
	require.NotContains(t, LiveObjects(), o)
}

func TestTagMismatchReportsBothStacks(t *testing.T) {
	errs := captureErrors(t)
	o := traced(t, "TagMismatch", nil)
	taggedRetainHere(o, "client-1")
	taggedReleaseHere(o, "client-1")
	taggedReleaseMismatch(o, "client-1")
	require.Len(t, *errs, 1)
	e := (*errs)[0]
	require.Equal(t, ErrTagMismatch, e.Kind)
	require.Equal(t, "client-1", e.Tag)
	require.Contains(t, e.Offender.Frames[0].Func, "refcount.taggedReleaseMismatch")
	require.Equal(t, "this tag last released", e.ConflictWhat)
	require.Contains(t, e.Conflict.Frames[0].Func, "refcount.taggedReleaseHere")
	require.Equal(t, 1, o.RetainCount(), "a mismatched release changes nothing")
	require.Len(t, e.Holders, 1)

	// A tag that never held anything: the conflict is the creation.
	taggedReleaseMismatch(o, "never")
	require.Len(t, *errs, 2)
	e = (*errs)[1]
	require.Contains(t, e.Offender.Frames[0].Func, "refcount.taggedReleaseMismatch")
	require.Contains(t, e.Conflict.Frames[0].Func, "refcount.traced")
	o.Release()
	require.Len(t, *errs, 2)
}

func TestSaturationReportsBothStacks(t *testing.T) {
	errs := captureErrors(t)
	o := traced(t, "Saturate", nil)
	o.tr.count.Store(saturated - 2)
	retainHere(o)
	require.Empty(t, *errs)
	retainAfterFree(o) // reaches the limit
	require.Len(t, *errs, 1)
	e := (*errs)[0]
	require.Equal(t, ErrSaturated, e.Kind)
	require.Contains(t, e.Offender.Frames[0].Func, "refcount.retainAfterFree")
	require.Equal(t, "last retained", e.ConflictWhat)
	require.Contains(t, e.Conflict.Frames[0].Func, "refcount.retainHere")
	require.Equal(t, saturated, o.RetainCount(), "pegged")
	retainHere(o)
	require.Len(t, *errs, 1, "a pegged count is reported once")
	o.Release()
	require.Equal(t, saturated, o.RetainCount(), "a pegged count never moves toward free")
}

func TestUntracedErrors(t *testing.T) {
	errs := captureErrors(t)
	frees := 0
	var o Object
	o.Init("UntracedErrors", func() { frees++ })
	require.False(t, o.Traced())
	releaseHere(&o)
	releaseAgainHere(&o)
	retainAfterFree(&o)
	require.Equal(t, 1, frees)
	require.Len(t, *errs, 1, "the over-release pegs the count, so the retain is quiet")
	require.Equal(t, ErrOverRelease, (*errs)[0].Kind)
	require.Contains(t, (*errs)[0].Offender.Frames[0].Func, "refcount.releaseAgainHere")

	var p Object
	p.Init("UntracedErrors", nil)
	p.Release()
	retainAfterFree(&p)
	require.Len(t, *errs, 2)
	require.Equal(t, ErrResurrected, (*errs)[1].Kind)
	require.Contains(t, (*errs)[1].Offender.Frames[0].Func, "refcount.retainAfterFree")

	var q Object
	q.Init("UntracedErrors", nil)
	q.refs.Store(saturated - 1)
	retainHere(&q)
	require.Equal(t, ErrSaturated, (*errs)[2].Kind)
	require.Equal(t, saturated, q.RetainCount())
}

func TestDefaultHandlerPanics(t *testing.T) {
	prev := SetErrorHandler(nil)
	defer func() { SetErrorHandler(prev) }()
	o := traced(t, "Panics", nil)
	o.Release()
	defer func() {
		r := recover()
		e, ok := r.(*Error)
		require.True(t, ok, "panics with *Error, got %v", r)
		require.Equal(t, ErrOverRelease, e.Kind)
	}()
	o.Release()
}

func TestNonComparableTagPanicsClearly(t *testing.T) {
	o := traced(t, "BadTag", nil)
	defer o.Release()
	require.PanicsWithValue(t, "refcount: tag of type []int is not comparable", func() { o.TaggedRetain([]int{1}) })
}

// The kinds are matchable with errors.Is, through wrapping too.
func TestErrorKindIs(t *testing.T) {
	for _, k := range []ErrorKind{ErrOverRelease, ErrResurrected, ErrTagMismatch, ErrSaturated} {
		err := fmt.Errorf("daemon: %w", &Error{Kind: k, Class: "C", ID: 1})
		require.ErrorIs(t, err, k)
		for _, other := range []ErrorKind{ErrOverRelease, ErrResurrected, ErrTagMismatch, ErrSaturated} {
			if other != k {
				require.NotErrorIs(t, err, other)
			}
		}
		var e *Error
		require.ErrorAs(t, err, &e)
		require.True(t, strings.HasPrefix(e.Error(), k.String()+": C#1"), e.Error())
		require.Equal(t, k.String(), k.Error())
	}
}
