// Package hidkbd is a sample HID driver: it drives keyboards (HIDDevice
// nubs whose first top-level collection is Generic Desktop / Keyboard)
// through their hidraw node, reads every input report in a job, decodes
// the boot-protocol layout (modifiers and six key codes) into key presses
// and releases, and offers user clients:
//
//   - "read": the first input report after sequence number N, waiting for
//     it if none came yet (in: {"after": N}; out: {"seq": M, "report": "hex",
//     "pressed": [codes down after it]}). Reports are numbered from 1 and
//     the driver keeps the last 64, so a client that reads with the seq it
//     got sees every report in order, and one that fell behind gets the
//     oldest kept (M > N+1 says how many it missed). An unplug ends a
//     waiting read with driver.ErrNoDevice;
//   - "keys": what was typed so far (out: {"text": "...", "events": N});
//   - "leds": set the keyboard's LEDs with an output report (in: {"leds": bits},
//     1 num lock, 2 caps lock, 4 scroll lock).
//
// Personality(backend) is all a program registers: it matches the HIDDevice
// nubs package hotplug/hidbus publishes (the keyboard's usage and a hidraw
// node), and the driver opens that node through the hid.Backend given —
// hid.Hidraw on a real machine, a hidsim.Backend on the simulated bus of
// `drvctl serve --sim` and in tests. The reader is a job of the service and
// the node a managed resource, so on an unplug or an unload the reader is
// cancelled and drained before Stop and the node closed after it.
package hidkbd
