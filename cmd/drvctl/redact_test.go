package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient/server"
)

// A reader who is not an admin does not see which process another user's
// user client serves; its own, and everything for an admin, stay whole.
func TestViewerRedacts(t *testing.T) {
	reader, admin := viewer{uid: 1000}, viewer{admin: true}
	client := func(uid any) serviceEntry {
		return serviceEntry{Class: server.UserClientClass, Name: "pid4242",
			Properties: map[string]any{"pid": 4242, "uid": uid, "gid": 1000, "comm": "scsiapp"}}
	}
	e := client(uint64(0))
	reader.entry(&e)
	require.Equal(t, "", e.Name)
	require.Empty(t, e.Properties)
	e = client(float64(1000))
	reader.entry(&e)
	require.Equal(t, "pid4242", e.Name, "the reader's own client")
	e = client(uint64(0))
	admin.entry(&e)
	require.Equal(t, "pid4242", e.Name)
	dev := serviceEntry{Class: "USBDevice", Name: "2-1", Properties: map[string]any{"serial": "X"}}
	reader.entry(&dev)
	require.Equal(t, "2-1", dev.Name)

	ev := monitorEvent{Kind: "lifecycle", Class: server.UserClientClass, Name: "pid4242"}
	reader.event(&ev)
	require.Empty(t, ev.Name)

	text := `UserClient#12 "pid4242": retain 2, active
  "userclient pid 4242 uid 0 (scsiapp)" → UserClient#12 → USBMassStorage#9
  "userclient pid 77 uid 1000 (mine)" → UserClient#13
  {"service":"UserClient#12 \"pid4242\""}`
	require.Equal(t, `UserClient#12: retain 2, active
  "userclient of another user" → UserClient#12 → USBMassStorage#9
  "userclient pid 77 uid 1000 (mine)" → UserClient#13
  {"service":"UserClient#12"}`, string(reader.text([]byte(text))))
	require.Equal(t, text, string(admin.text([]byte(text))))
}
