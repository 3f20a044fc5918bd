package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// syncBuffer is a log destination shared by the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

// peer is a connection of another user, as the server would have it after
// the handshake (the tests run as root, whom the policy always admits).
func peer(ts *testServer, uid, gid uint32) *conn {
	return &conn{srv: ts.Server, cred: userclient.Cred{PID: 4242, UID: uid, GID: gid}, version: 2}
}

// A refusal never tells whether what was asked for exists: a peer some rule
// admits gets "no such service" for a service it may not open, as for one
// that is not there, whatever the match (class, name, property); a peer no
// rule admits gets "permission denied" for both.
func TestRefusalIsNoExistenceOracle(t *testing.T) {
	ts := newTestServer(t, Config{Policy: Policy{Rules: []Rule{{UIDs: []uint32{1000}, Classes: []string{"PublicDevice"}}}}})
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		uid          uint32
		exists, nope userclient.Match
		wantSentinel error
	}{
		{"class", 1000, userclient.Match{Class: "TestDevice"}, userclient.Match{Class: "NoDevice"}, wire.ErrNoService},
		{"name", 1000, userclient.Match{Name: "dev0"}, userclient.Match{Name: "nope0"}, wire.ErrNoService},
		{"unadmitted", 2000, userclient.Match{Class: "TestDevice"}, userclient.Match{Class: "NoDevice"}, wire.ErrPermission},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := peer(ts, tc.uid, tc.uid)
			_, _, errExists := c.openWaiting(ctx, wire.OpenMsg{Match: tc.exists})
			_, _, errNope := c.openWaiting(ctx, wire.OpenMsg{Match: tc.nope})
			require.ErrorIs(t, errExists, tc.wantSentinel)
			require.Equal(t, wire.CodeOf(errNope), wire.CodeOf(errExists))
			require.Equal(t, errNope.Error(), errExists.Error())
		})
	}
}

// The read views (the monitor's class, read-only admin operations) need the
// read right: uid 0, an admin group or a read group. A rule admitting a
// user to everything does not give it.
func TestReadRight(t *testing.T) {
	p := Policy{
		Rules:       []Rule{{AnyUser: true}},
		AdminGIDs:   []uint32{10},
		ReadGIDs:    []uint32{20},
		ReadOps:     []string{"inspect", "leaks"},
		ReadClasses: []string{"Monitor"},
	}
	mon := userclient.ServiceInfo{ID: 1, Class: "Monitor"}
	dev := userclient.ServiceInfo{ID: 2, Class: "Disk"}
	anyone := userclient.Cred{UID: 1000, GID: 1000}
	reader := userclient.Cred{UID: 1001, GID: 1001, Groups: []uint32{20}}
	admin := userclient.Cred{UID: 1002, GID: 10}
	root := userclient.Cred{}

	require.NoError(t, p.AllowOpen(anyone, dev))
	require.ErrorIs(t, p.AllowOpen(anyone, mon), wire.ErrPermission)
	require.ErrorIs(t, p.AllowAdmin(anyone, "inspect"), wire.ErrPermission)
	for _, c := range []userclient.Cred{reader, admin, root} {
		require.NoError(t, p.AllowOpen(c, mon), "%+v", c)
		require.NoError(t, p.AllowAdmin(c, "inspect"), "%+v", c)
		require.NoError(t, p.AllowAdmin(c, "leaks"), "%+v", c)
	}
	require.ErrorIs(t, p.AllowAdmin(reader, "terminate"), wire.ErrPermission, "reading is not administering")
	require.NoError(t, p.AllowAdmin(admin, "terminate"))
}

// ReadAnyUser gives everyone the read right and nothing else: a reader may
// inspect and open the monitor, but not open a device (told so, with the
// operator's hint) nor administer; AdminUIDs administer; refusals say which
// right is missing.
func TestReadAnyUserAndAdminUIDs(t *testing.T) {
	p := Policy{
		ReadAnyUser: true,
		AdminUIDs:   []uint32{1002},
		ReadOps:     []string{"inspect"},
		ReadClasses: []string{"Monitor"},
		OpenHint:    "open hint", AdminHint: "admin hint", ReadHint: "read hint",
	}
	mon := userclient.ServiceInfo{ID: 1, Class: "Monitor"}
	anyone := userclient.Cred{UID: 1000, GID: 1000}
	admin := userclient.Cred{UID: 1002, GID: 1002}

	require.NoError(t, p.AllowOpen(anyone, mon))
	require.NoError(t, p.AllowAdmin(anyone, "inspect"))
	require.False(t, p.IsAdmin(anyone))
	require.False(t, p.mayOpenAny(anyone))
	err := p.AllowAdmin(anyone, "terminate")
	require.ErrorIs(t, err, wire.ErrPermission)
	require.EqualError(t, err, `permission denied: "terminate" is an administrative call, which needs the admin right: uid 0 or an admin (peer uid 1000 gid 1000) (admin hint)`)
	require.EqualError(t, p.refuseOpenAll(anyone), "permission denied: opening a service needs the open right, which no rule gives uid 1000 gid 1000 (open hint)")

	require.True(t, p.IsAdmin(admin))
	require.NoError(t, p.AllowAdmin(admin, "terminate"))

	p.ReadAnyUser = false
	err = p.AllowAdmin(anyone, "inspect")
	require.EqualError(t, err, `permission denied: "inspect" reads the daemon's state, which needs the read right: uid 0, an admin or a reader (peer uid 1000 gid 1000) (read hint)`)
	p.ReadUIDs = []uint32{1000}
	require.NoError(t, p.AllowAdmin(anyone, "inspect"))
}

// Every open and administrative decision, granted or refused, is logged
// with the peer's pid, uid and gid and what it asked.
func TestAuditLog(t *testing.T) {
	var buf syncBuffer
	ts := newTestServer(t, Config{
		Audit:  slog.New(slog.NewJSONHandler(&buf, nil)),
		Policy: Policy{Rules: []Rule{{UIDs: []uint32{1000}, Classes: []string{"PublicDevice"}}}},
	})
	ctx := context.Background()
	h, err := ts.dial(t).Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	require.NoError(t, h.Close())
	nobody := peer(ts, 1000, 1000)
	_, _, err = nobody.openWaiting(ctx, wire.OpenMsg{Match: userclient.Match{Class: "TestDevice"}})
	require.ErrorIs(t, err, wire.ErrNoService)
	_, _, err = ts.admin(ctx, nobody.cred, "terminate", nil, nil)
	require.ErrorIs(t, err, wire.ErrPermission)

	lines := buf.lines(t)
	require.Len(t, lines, 3, "%v", lines)
	granted, refusedOpen, refusedAdmin := lines[0], lines[1], lines[2]
	require.Equal(t, "audit: granted", granted["msg"])
	require.Equal(t, "open", granted["op"])
	require.Equal(t, "class=TestDevice", granted["asked"])
	require.Equal(t, "TestDevice#"+jsonID(ts.dev.ID()), granted["service"])
	require.Equal(t, float64(0), granted["uid"])
	require.NotZero(t, granted["pid"])

	require.Equal(t, "audit: refused", refusedOpen["msg"])
	require.Equal(t, "WARN", refusedOpen["level"])
	require.Equal(t, float64(1000), refusedOpen["uid"])
	require.Equal(t, float64(4242), refusedOpen["pid"])
	require.Contains(t, refusedOpen["why"], "may not open TestDevice")

	require.Equal(t, "admin", refusedAdmin["op"])
	require.Equal(t, "terminate", refusedAdmin["asked"])
	require.Contains(t, refusedAdmin["why"], "permission denied")
}

func jsonID(id uint64) string { b, _ := json.Marshal(id); return string(b) }
