// Package qmp is a client for the QEMU Machine Protocol, the JSON protocol a
// QEMU process serves on its -qmp socket.
//
// A session starts with the server's greeting; [Dial] or [NewClient] reads it
// and negotiates capabilities, after which [Client.Execute] runs commands.
// Replies are matched to commands by id, so commands may run concurrently.
// Asynchronous events (DEVICE_DELETED, SHUTDOWN, …) are kept in a bounded log
// in arrival order: take a [Client.Mark] before causing an event and wait for
// it with [Client.WaitEvent], so an event that arrives before the wait starts
// is not missed.
//
// Errors: a command QEMU rejects returns a [*Error] (its class and
// description); anything else is an [*OpError] naming the operation and
// wrapping the cause ([ErrClosed], a context error, a decode error).
//
// [Client.DeviceDel] and [Client.DeviceAdd] wrap the hotplug dance the tests
// need: device_del returns before the guest let go of the device, so it waits
// for DEVICE_DELETED; device_add on a block node that a just-deleted device
// used fails with "Permission conflict" until QEMU has released the node, so
// it retries.
package qmp
