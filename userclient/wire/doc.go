// Package wire is drvkit's user-client wire protocol, shared by the
// application side (package userclient) and the daemon side (package
// userclient/server): frames and their stream decoder, the JSON control
// payloads, the error codes with the sentinel errors they stand for, and
// the notification encoding a fan-out sends to every client.
//
// It imports nothing of drvkit, so that an application that speaks the
// protocol links none of the registry. PROTOCOL.md in this directory is
// the protocol's full description, enough to write a client in any
// language.
//
// A malformed frame is a *ProtocolError (errors.Is ErrProtocol); an error
// frame received is a *RemoteError, which matches the sentinel of its
// code: CodeOf and RemoteError.Is are the two directions of one table.
package wire
