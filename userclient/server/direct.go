package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/drvkit/drvkit/userclient/wire"
)

// DirectSession is a Session whose calls the driver's own process can
// serve on a connection of their own (protocol version 4; see
// Config.NoDirectCalls). The registry backend's sessions are, when the
// service's driver is a CallAdopter.
type DirectSession interface {
	Session
	// DirectCalls reports whether a call channel can be handed over now.
	DirectCalls() bool
	// HandOver gives conn — the application's connection, past its
	// handshake — to the driver's process, which serves the session's
	// calls on it until the session ends. conn stays the caller's to
	// close (the process holds its own copy).
	HandOver(ctx context.Context, conn *os.File, maxFrame, maxInflight int) error
}

// errHandedOver ends a connection that became a direct call channel: its
// welcome is sent, the server's copy of the socket is closed, and the
// driver's process serves it.
var errHandedOver = errors.New("handed over to the driver's process as a direct call channel")

// handOverTimeout bounds how long the driver's process may take to take a
// channel.
const handOverTimeout = 5 * time.Second

// offerDirect returns the token of a direct call channel for e, or "" when
// none is offered: an older client, the server's NoDirectCalls, a session
// whose driver cannot serve calls itself.
func (c *conn) offerDirect(e *entry) string {
	if c.version < 4 || c.srv.cfg.NoDirectCalls || c.embedded {
		return ""
	}
	ds, ok := e.sess.(DirectSession)
	if !ok || !ds.DirectCalls() {
		return ""
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.offers == nil {
		s.offers = make(map[string]*directOffer)
	}
	s.offers[token] = &directOffer{owner: c, e: e}
	e.offer = token
	return token
}

// withdraw forgets e's offer (its handle closed).
func (s *Server) withdraw(e *entry) {
	s.mu.Lock()
	if e.offer != "" {
		delete(s.offers, e.offer)
		e.offer = ""
	}
	s.mu.Unlock()
}

// handOver makes c, whose hello carried token, the direct call channel of
// the handle that offered it: only the process that opened the handle may
// take it (its pid and uid, from SO_PEERCRED), once.
func (c *conn) handOver(token string) error {
	s := c.srv
	refuse := func(why string) error {
		err := fmt.Errorf("%w: direct call channel: %s", wire.ErrPermission, why)
		s.audit(c.cred, "direct", "channel", err)
		return err
	}
	if c.version < 4 {
		return wire.Errorf(nil, "a direct call channel needs protocol version 4, this connection speaks %d", c.version)
	}
	s.mu.Lock()
	o := s.offers[token]
	if o != nil && o.owner.cred.PID == c.cred.PID && o.owner.cred.UID == c.cred.UID {
		delete(s.offers, token)
		o.e.offer = ""
	}
	s.mu.Unlock()
	if o == nil {
		return refuse("no open handle offers this token (taken, closed, or never offered)")
	}
	if o.owner.cred.PID != c.cred.PID || o.owner.cred.UID != c.cred.UID {
		return refuse(fmt.Sprintf("the handle was opened by pid %d uid %d", o.owner.cred.PID, o.owner.cred.UID))
	}
	if o.owner.lookup(o.e.handle) != o.e {
		return refuse("the handle is closed")
	}
	ds := o.e.sess.(DirectSession)
	f, err := c.nc.File()
	if err != nil {
		return fmt.Errorf("direct call channel: %w", err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(c.ctx, handOverTimeout)
	defer cancel()
	if err := ds.HandOver(ctx, f, s.cfg.MaxFrame, s.cfg.MaxInflight); err != nil {
		s.audit(c.cred, "direct", o.e.sess.Info().String(), nil, slog.String("failed", err.Error()))
		return fmt.Errorf("direct call channel: %w", err)
	}
	s.audit(c.cred, "direct", o.e.sess.Info().String(), nil)
	return nil
}
