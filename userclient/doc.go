// Package userclient is the application side of drvkit: it opens drvkit
// services through the daemon's Unix socket and calls their drivers.
//
// Applications use Dial, (*Client).Open or OpenWait, (*Handle).Call,
// (*Handle).Notifications and Close. Cancelling the context of a Call
// cancels the driver method's context in the daemon too (a cancel frame,
// protocol version 2). Notifications (the service is terminated, is
// requesting close, was closed, driver messages) arrive on a bounded
// channel per handle — or, with WithNotificationHandler, to a function
// called on the goroutine that reads the connection; the daemon
// disconnects an application that stops reading them, so it never blocks
// anyone else. Nothing depends on the
// application behaving: when it exits or crashes, the daemon closes
// everything it had open.
//
// The package imports nothing of drvkit but the protocol (package
// userclient/wire): an application that dials the daemon links none of
// the registry, the reference counting or the USB and SCSI transports.
// The daemon side — the socket server, its policy, peer credentials and
// the registry backend — is package userclient/server, whose Embed
// method gives a process that runs the registry itself a *Client
// connected in process, with exactly these semantics.
//
// Errors match the sentinels below with errors.Is whether they were made
// locally or sent by the daemon, and read as "<op> <what>: <why>", for
// example "open personality=nosuch: no such service" (OpError).
package userclient
