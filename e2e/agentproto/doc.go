// Package agentproto is the wire protocol between the end-to-end test host
// and the agent running as PID 1 inside the QEMU guest.
//
// The channel is the guest's second serial port (ttyS1, a Unix socket on the
// host), in raw mode. Every message is one JSON object on one line. The host
// sends a [Request]; the guest answers each with a [Response] carrying the
// same id, in any order (requests run concurrently), and streams [Event]s —
// kernel uevents among them — once the host asked for them with OpSubscribe.
//
// The first serial port is the console: the kernel log, and one human
// readable line per finished request, "E2E <op> PASS|FAIL <detail>", which is
// what a CI log shows and what a boot-time script (the kernel command line's
// drvkit.e2e=<base64url JSON array of requests>) is checked by.
//
// Later scenarios drive drvctl through OpExec/OpStart/OpSignal/OpWait: the
// agent is the guest's remote shell, with timeouts on everything.
package agentproto
