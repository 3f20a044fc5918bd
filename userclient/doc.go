// Package userclient lets applications open drvkit services over a Unix
// socket, and makes sure a crashed application leaves nothing behind.
//
// A Server listens on a Unix stream socket. Every connection is identified by
// its peer credentials (SO_PEERCRED) and checked against a Policy. Opening a
// service creates a session on a Backend — with the driver registry, a
// user-client service attached as a client of the target — and Call dispatches
// to the named methods the driver declares. Notifications (the service is
// terminated, is requesting close, was closed, driver messages) are pushed to
// the application; a client that does not read them is disconnected once its
// bounded buffer is full, so it never blocks anyone else.
//
// Nothing depends on the application behaving: when the connection drops, or
// the process that connected exits (watched through a pidfd on the runtime
// poller, which also catches a process that died while a child inherited the
// socket), every session of the connection gets ClientDied and releases what
// it held.
//
// Applications use Dial, (*Client).Open, (*Handle).Call, (*Handle).Notifications
// and Close. Cancelling the context of a Call cancels the driver method's
// context on the server too (a cancel frame, protocol version 2). In-process users get the same semantics from (*Server).Embed,
// where cancelling the context means the client died.
//
// The wire protocol is described in PROTOCOL.md.
package userclient
