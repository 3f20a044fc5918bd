// Package e2e boots drvkit's end-to-end test machine, a QEMU guest with real
// USB and SCSI hardware, and drives it from Go tests on the host.
//
// The guest is Debian's generic kernel with a busybox initramfs whose PID 1 is
// the agent in e2e/guest. [Prepare] fetches and builds everything (through
// prepare.sh, cached under .cache/e2e or $DRVKIT_E2E_CACHE); [Boot] starts
// QEMU under TCG with a qemu-xhci controller and a usb-storage stick, and a
// virtio-scsi controller with a scsi-hd disk, both on -blockdev nodes so they
// can be unplugged and plugged back. A [Machine] offers three channels:
//
//   - QMP ([Machine.QMP]): hotplug, from the host side, as a user pulling a
//     cable would;
//   - the agent ([Machine.Agent], the guest's ttyS1): requests the agent runs
//     inside the guest (gousb enumeration, SG_IO, configfs gadgets, arbitrary
//     commands such as drvctl) and the kernel uevents it streams back;
//   - the console ([Machine.Console], ttyS0): the kernel log and the agent's
//     "E2E <op> PASS|FAIL <detail>" lines, saved to a log file whose tail a
//     failing test prints.
//
// Every wait takes a context; QEMU is killed when the machine is closed and,
// through the parent-death signal, when the test binary dies.
//
// The scenarios themselves are in the _test.go files behind the "e2e" build
// tag (e2e_test.go: the kernel and transports; drvctl_test.go: the daemon and
// its applications; hid_test.go: QEMU's usb-kbd hot-plugged, through
// hidraw to hidkbd and an application; journal_test.go: the detach journal
// across SIGKILLed daemons; scsisoak_test.go: the virtio-scsi disk pulled
// under SG_IO readers, and a USB stick pulled before its driver's Start), so that `go test ./...` does not boot anything; `make e2e` runs
// them.
package e2e
