package usb_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/usb"
)

// FuzzParseSelector: any string parses or errs without panicking, and a
// selector that parses prints back to one that parses the same.
func FuzzParseSelector(f *testing.F) {
	f.Add("2/3")
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := usb.ParseSelector(s)
		if err != nil {
			require.Equal(t, usb.Selector{}, sel)
			return
		}
		if sel.Bus != 0 {
			require.True(t, sel.Bus >= 1 && sel.Bus <= 255 && sel.Address >= 1 && sel.Address <= 255, "%+v", sel)
			require.Empty(t, sel.Serial)
		}
		again, err := usb.ParseSelector(sel.String())
		require.NoError(t, err, "%q printed as %q", s, sel.String())
		require.Equal(t, sel, again, "%q printed as %q", s, sel.String())
	})
}
