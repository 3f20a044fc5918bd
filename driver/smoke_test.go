package driver_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
)

func TestSmoke(t *testing.T) {
	e := newEnv(t)
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "drv", Class: "Drv",
		Match: []driver.Match{driver.MatchValue("vendor", 0x1234)},
		New:   func() driver.Driver { return &testDriver{log: e.log} }}))
	nub := e.r.NewNub("Nub", "n0", driver.NewProperties(map[string]any{"vendor": uint16(0x1234)}))
	require.NoError(t, e.r.Publish(nil, nub))
	cs := nub.Clients()
	require.Len(t, cs, 1)
	require.True(t, cs[0].State().Active)
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	t.Log(e.rec.Steps())
	t.Log(e.log.get())
}
