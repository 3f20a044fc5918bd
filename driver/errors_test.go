package driver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
)

func TestPanicErrorUnwrap(t *testing.T) {
	pathErr := &fs.PathError{Op: "open", Path: "/dev/sg9", Err: fs.ErrNotExist}
	for _, tc := range []struct {
		name  string
		value any
		is    error // a target errors.Is must find, nil: none
	}{
		{"sentinel", io.ErrUnexpectedEOF, io.ErrUnexpectedEOF},
		{"wrapped", fmt.Errorf("read: %w", driver.ErrNoDevice), driver.ErrNoDevice},
		{"path error", pathErr, fs.ErrNotExist},
		{"string", "bad method", nil},
		{"error text", "EOF", nil}, // a string, even one that reads like an error
		{"int", 42, nil},
		{"nil", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pe := &driver.PanicError{Callback: "Start", Service: `Disk#3 "sd"`, Value: tc.value}
			if err, isErr := tc.value.(error); isErr {
				require.Equal(t, err, pe.Unwrap())
			} else {
				require.NoError(t, pe.Unwrap())
			}
			if tc.is != nil {
				require.ErrorIs(t, pe, tc.is)
			}
			require.False(t, errors.Is(pe, io.EOF))
			var got *driver.PanicError
			require.ErrorAs(t, fmt.Errorf("call: %w", pe), &got)
			require.Same(t, pe, got)
		})
	}
	var pe2 *fs.PathError
	require.ErrorAs(t, &driver.PanicError{Value: pathErr}, &pe2)
	require.Equal(t, "/dev/sg9", pe2.Path)
}

// A client method that panics with an error: the caller matches the
// error through the PanicError.
func TestCallPanicWithErrorIsMatchable(t *testing.T) {
	e := newEnv(t)
	_, d := publishWith(t, e, "disk", func() driver.Driver {
		return &testDriver{log: e.log, methods: map[string]driver.Method{
			"read": func(context.Context, *driver.Service, []byte) ([]byte, error) {
				panic(fmt.Errorf("read lba 7: %w", driver.ErrNoDevice))
			},
		}}
	})
	_, err := d.Call(ctxT(t), "read", nil)
	var pe *driver.PanicError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, driver.ErrNoDevice)
	e.quiet()
}
