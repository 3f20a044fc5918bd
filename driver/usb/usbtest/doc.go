// Package usbtest is the in-memory usb.Backend for tests. It is package
// usbsim under the name tests have always used; see usbsim for the
// documentation.
//
// New code should import usbsim; this package stays so that existing
// tests keep compiling.
package usbtest
