package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

// monitorClass is the class of the pseudo-service `drvctl monitor` opens:
// not a registry service, but opening it through the ordinary userclient
// path gives the monitor stream the same authentication, policy, bounded
// queue and crash cleanup as any user client.
const (
	monitorClass            = "DrvkitMonitor"
	monitorID               = math.MaxUint64 // never a registry ID
	monitorNote             = "MonitorEvent"
	monitorNotificationType = userclient.NotificationType(monitorNote)
)

// daemonBackend is the registry backend plus the monitor pseudo-service.
type daemonBackend struct {
	*server.RegistryBackend
	hub      *monitorHub
	policy   *server.Policy // who sees other users' processes in the monitor
	sessions sessionHooks   // nil: opens and deaths are not counted
}

var _ server.Backend = (*daemonBackend)(nil)

var monitorInfo = userclient.ServiceInfo{ID: monitorID, Class: monitorClass, Name: "monitor"}

func (b *daemonBackend) Lookup(m userclient.Match) ([]userclient.ServiceInfo, error) {
	if m.Class == monitorClass || m.ID == monitorID {
		if m.Matches(monitorInfo) {
			return []userclient.ServiceInfo{monitorInfo}, nil
		}
		return nil, nil
	}
	return b.RegistryBackend.Lookup(m)
}

func (b *daemonBackend) Open(ctx context.Context, id uint64, req server.OpenRequest) (server.Session, error) {
	if id != monitorID {
		s, err := b.RegistryBackend.Open(ctx, id, req)
		if err != nil || b.sessions == nil {
			return s, err
		}
		b.sessions.UserClientOpened()
		return &countedSession{Session: s, hooks: b.sessions}, nil
	}
	s := &monitorSession{}
	v := viewerOf(b.policy, req.Cred)
	s.cancel = b.hub.subscribe(func(e monitorEvent) {
		if !s.filter.match(&e) {
			return
		}
		v.event(&e)
		data, err := json.Marshal(e)
		if err != nil {
			return
		}
		req.Notify(userclient.Notification{Type: monitorNotificationType, Service: monitorID, Data: data})
	})
	return s, nil
}

// monitorSession is one open monitor stream.
type monitorSession struct {
	once   sync.Once
	cancel func()
	filter filterBox
}

// monitorMethodFilter sets the stream's filter (a JSON monitorFilter):
// the daemon then sends only the events that match.
const monitorMethodFilter = "filter"

func (s *monitorSession) Info() userclient.ServiceInfo { return monitorInfo }
func (s *monitorSession) ClientID() uint64             { return 0 }
func (s *monitorSession) Call(_ context.Context, method string, in []byte) ([]byte, error) {
	if method != monitorMethodFilter {
		return nil, userclient.ErrNoMethod
	}
	f := new(monitorFilter)
	if err := json.Unmarshal(in, f); err != nil {
		return nil, fmt.Errorf("bad monitor filter: %w", err)
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	s.filter.p.Store(f)
	return nil, nil
}
func (s *monitorSession) Close() error { s.once.Do(s.cancel); return nil }
func (s *monitorSession) ClientDied()  { s.once.Do(s.cancel) }
