// Package server is the daemon side of drvkit's user clients: it serves
// applications (package userclient) on a Unix socket and makes sure a
// crashed application leaves nothing behind.
//
// A Server listens on a Unix stream socket. Every connection is identified
// by its peer credentials (SO_PEERCRED) and checked against a Policy.
// Opening a service creates a session on a Backend — with the driver
// registry (NewRegistryBackend), a user-client service attached as a
// client of the target — and calls dispatch to the named methods the
// driver declares. Notifications are pushed to the application; a client
// that does not read them is disconnected once its bounded queue is full,
// so it never blocks anyone else.
//
// Nothing depends on the application behaving: when the connection drops,
// or the process that connected exits (watched through a pidfd on the
// runtime poller, which also catches a process that died while a child
// inherited the socket), every session of the connection gets ClientDied
// and releases what it held.
//
// A process that runs the registry itself gets the same semantics from
// (*Server).Embed: a *userclient.Client connected over a socketpair, whose
// context's end is the client dying.
//
// The protocol is package userclient/wire (PROTOCOL.md there).
package server
