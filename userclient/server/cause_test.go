package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// TestNotificationCause: the registry backend hands the server
// ServiceIsTerminated and ServiceIsRequestingClose with the termination's
// cause and root cause, for each way a device goes away. (The wire does
// not carry them yet; this is the in-process delivery.)
func TestNotificationCause(t *testing.T) {
	for _, tc := range []struct {
		name        string
		end         func(tr *testRegistry, dev *testDevice) error
		cause, root string
	}{
		{"unplug", func(_ *testRegistry, dev *testDevice) error {
			dev.nub.TerminateWith(driver.CauseUnplug)
			return nil
		}, "provider", "unplug"},
		{"unload", func(tr *testRegistry, dev *testDevice) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			return tr.r.Unload(ctx, dev.Personality().Name)
		}, "unload", "unload"},
		{"administrator", func(_ *testRegistry, dev *testDevice) error {
			dev.TerminateWith(driver.CauseAdmin)
			return nil
		}, "admin", "admin"},
		{"shutdown", func(tr *testRegistry, _ *testDevice) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			return tr.r.Close(ctx)
		}, "provider", "shutdown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaktest.Check(t)
			tr := newTestRegistry(t)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				require.NoError(t, tr.r.Close(ctx))
				tr.rec.Check(t)
			})
			dev := tr.publish(t, "TestDevice", "d0")
			notes := make(chan userclient.Notification, 16)
			sess, err := NewRegistryBackend(tr.r).Open(context.Background(), dev.ID(), OpenRequest{
				Cred: userclient.Cred{PID: 4242, UID: 1000}, Notify: func(n userclient.Notification) { notes <- n }})
			require.NoError(t, err)

			ended := make(chan error, 1)
			go func() { ended <- tc.end(tr, dev) }()
			// The termination waits for the application's close.
			var got []userclient.Notification
			for n := range notes {
				got = append(got, n)
				if n.Type == userclient.ServiceIsRequestingClose {
					break
				}
			}
			// A call on the terminated service: ErrTerminated, and
			// ErrNoDevice (wire code no_device) only after an unplug.
			_, err = sess.Call(context.Background(), "echo", nil)
			require.ErrorIs(t, err, userclient.ErrTerminated)
			require.Equal(t, tc.root == "unplug", errors.Is(err, userclient.ErrNoDevice), "%v", err)
			require.Equal(t, map[bool]string{true: wire.CodeNoDevice, false: wire.CodeTerminated}[tc.root == "unplug"], wire.CodeOf(err))
			require.NoError(t, sess.Close())
			require.NoError(t, <-ended)
			require.NoError(t, tr.r.WaitQuiet(context.Background()))
			close(notes)
			for n := range notes {
				got = append(got, n)
			}
			var types []userclient.NotificationType
			for _, n := range got {
				types = append(types, n.Type)
				require.Equal(t, dev.ID(), n.Service)
				require.Equal(t, tc.cause, n.Cause, "%s", n.Type)
				require.Equal(t, tc.root, n.RootCause, "%s", n.Type)
			}
			require.Equal(t, []userclient.NotificationType{userclient.ServiceIsTerminated, userclient.ServiceIsRequestingClose}, types)
		})
	}
}

// TestNotificationCauseOnTheWire: an application sees the cause of a
// termination over the socket and embedded, so it can tell an unplug
// from an administrator's terminate.
func TestNotificationCauseOnTheWire(t *testing.T) {
	for _, mode := range clientModes {
		for _, tc := range []struct {
			name        string
			end         func(*testDevice)
			cause, root string
		}{
			{"unplug", func(d *testDevice) { d.nub.TerminateWith(driver.CauseUnplug) }, "provider", "unplug"},
			{"admin", func(d *testDevice) { d.TerminateWith(driver.CauseAdmin) }, "admin", "admin"},
		} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				ts := newTestServer(t, Config{})
				ctx := context.Background()
				h, err := ts.client(t, mode).Open(ctx, userclient.Match{ID: ts.dev.ID()})
				require.NoError(t, err)
				// A call in flight when the service goes: the daemon
				// answers it.
				inflight := make(chan error, 1)
				go func() {
					_, err := h.Call(ctx, "block", nil)
					inflight <- err
				}()
				<-ts.reg.entered
				tc.end(ts.dev)
				var seen []userclient.NotificationType
				for n := range h.Notifications() {
					seen = append(seen, n.Type)
					require.Equal(t, tc.cause, n.Cause, "%s", n.Type)
					require.Equal(t, tc.root, n.RootCause, "%s", n.Type)
					if n.Type == userclient.ServiceIsRequestingClose {
						break
					}
				}
				require.Equal(t, []userclient.NotificationType{userclient.ServiceIsTerminated, userclient.ServiceIsRequestingClose}, seen)
				// After an unplug every call fails with ErrNoDevice: the
				// one in flight (the daemon's no_device) and the one after
				// the handle heard of the termination (answered locally,
				// ErrTerminated too); after other causes, ErrTerminated.
				unplug := tc.root == "unplug"
				err = <-inflight
				require.Equal(t, unplug, errors.Is(err, userclient.ErrNoDevice), "in flight: %v", err)
				require.Equal(t, !unplug, errors.Is(err, userclient.ErrTerminated), "in flight: %v", err)
				_, err = h.Call(ctx, "echo", nil)
				require.ErrorIs(t, err, userclient.ErrTerminated)
				require.Equal(t, unplug, errors.Is(err, userclient.ErrNoDevice), "after: %v", err)
				require.NoError(t, h.Close())
				ts.reg.waitFreed(t, h.ClientID())
				ts.reg.checkTrace(t, h.ClientID())
			})
		}
	}
}
