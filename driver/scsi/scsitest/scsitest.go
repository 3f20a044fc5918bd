package scsitest

import (
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
)

// The fake's types; see scsisim.
type (
	Disk      = scsisim.Disk
	Option    = scsisim.Option
	Transport = scsisim.Transport
)

// NewDisk returns a disk of blocks blocks (scsisim.NewDisk).
func NewDisk(blocks uint64, blockSize uint32, opts ...Option) *Disk {
	return scsisim.NewDisk(blocks, blockSize, opts...)
}

// WithInquiry sets the INQUIRY strings and peripheral type (scsisim.WithInquiry).
func WithInquiry(vendor, product, revision string, typ scsi.PeripheralType) Option {
	return scsisim.WithInquiry(vendor, product, revision, typ)
}

// ReadOnly makes the disk refuse writes (scsisim.ReadOnly).
func ReadOnly() Option { return scsisim.ReadOnly() }

// NewTransport returns a scsi.Transport to d (scsisim.NewTransport).
func NewTransport(d *Disk) *Transport { return scsisim.NewTransport(d) }
