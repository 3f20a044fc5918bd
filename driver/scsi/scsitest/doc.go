// Package scsitest is the in-memory SCSI disk for tests. It is package
// scsisim under the name tests have always used; see scsisim for the
// documentation.
//
// New code should import scsisim; this package stays so that existing
// tests keep compiling.
package scsitest
