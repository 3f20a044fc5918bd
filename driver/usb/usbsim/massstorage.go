package usbsim

import (
	"context"
	"encoding/binary"
	"sync"

	"github.com/drvkit/drvkit/driver/usb"
)

// SCSITarget executes SCSI commands for MassStorage; scsisim.Disk is one.
// For data-out commands dataOut holds everything the host sent; for data-in
// commands the target fills dataIn. n is the bytes produced or consumed;
// status is the SCSI status byte.
type SCSITarget interface {
	Execute(cdb, dataOut, dataIn []byte) (n int, status uint8, sense []byte)
}

// Bulk-only transport constants (USB Mass Storage Class Bulk-Only Transport
// 1.0, sections 3 and 5).
const (
	cbwSignature = 0x43425355 // "USBC"
	cswSignature = 0x53425355 // "USBS"
	cbwLen       = 31
	cswLen       = 13

	// Mass-storage endpoint addresses used by MassStorage.
	MassStorageIn  = 0x81
	MassStorageOut = 0x02
)

type botState int

const (
	stWaitCBW botState = iota
	stDataOut
	stDataIn
	stCSW
	stNeedReset // invalid CBW: both pipes stalled until reset recovery
)

// MassStorage is the device side of a bulk-only mass-storage function.
type MassStorage struct {
	target SCSITarget
	dev    *Device // set by PlugMassStorage

	mu       sync.Mutex
	state    botState
	tag      uint32
	expect   uint32 // dCBWDataTransferLength
	cdb      []byte
	out      []byte // data-out accumulator
	in       []byte // data-in pending
	inBuf    []byte // reused data-in buffer
	residue  uint32
	status   uint8
	resets   int
	commands int

	// One-shot faults; each call of the injecting method adds one.
	stallDataIn int
	stallCSW    int
	phaseErr    int
	badTag      int
	dataInHook  func(ctx context.Context) error
}

// PlugMassStorage plugs a bulk-only mass-storage device (interface 0,
// class 08/06/50, bulk IN 0x81 and OUT 0x02, kernel driver usb-storage)
// whose logical unit is target. spec supplies IDs and bus position; its
// Interfaces and Control are replaced.
func (b *Backend) PlugMassStorage(spec DeviceSpec, target SCSITarget) (*MassStorage, *Device) {
	m := &MassStorage{target: target}
	spec.Interfaces = []InterfaceSpec{{
		Number: 0, Class: 0x08, SubClass: 0x06, Protocol: 0x50, KernelDriver: "usb-storage",
		Endpoints: []EndpointSpec{
			{Address: MassStorageIn, Type: usb.TransferBulk, MaxPacketSize: 512, Handler: m.bulkIn},
			{Address: MassStorageOut, Type: usb.TransferBulk, MaxPacketSize: 512, Handler: m.bulkOut},
		},
	}}
	spec.Control = m.control
	m.dev = b.Plug(spec)
	return m, m.dev
}

// StallNextDataIn makes the next data-in phase end with a stall of the
// bulk-in pipe after the data, as devices do when they have less data than
// the host asked for.
func (m *MassStorage) StallNextDataIn() { m.mu.Lock(); m.stallDataIn++; m.mu.Unlock() }

// StallNextCSW makes the next CSW read stall once; the CSW follows after
// the host clears the halt.
func (m *MassStorage) StallNextCSW() { m.mu.Lock(); m.stallCSW++; m.mu.Unlock() }

// PhaseErrorNext makes the next command end with CSW status 2 (phase error).
func (m *MassStorage) PhaseErrorNext() { m.mu.Lock(); m.phaseErr++; m.mu.Unlock() }

// BadTagNext makes the next CSW carry a tag that does not match its CBW.
func (m *MassStorage) BadTagNext() { m.mu.Lock(); m.badTag++; m.mu.Unlock() }

// SetDataInHook runs h before every data-in phase; a hook that blocks on
// ctx simulates a READ in flight (ctx ends when the device is unplugged).
func (m *MassStorage) SetDataInHook(h func(ctx context.Context) error) {
	m.mu.Lock()
	m.dataInHook = h
	m.mu.Unlock()
}

// Resets returns how many Bulk-Only Mass Storage Resets the host issued.
func (m *MassStorage) Resets() int { m.mu.Lock(); defer m.mu.Unlock(); return m.resets }

// Commands returns how many CBWs the device accepted.
func (m *MassStorage) Commands() int { m.mu.Lock(); defer m.mu.Unlock(); return m.commands }

func (m *MassStorage) control(ctx context.Context, s Setup, data []byte) (int, error) {
	switch {
	case s.RequestType == 0x21 && s.Request == 0xff: // Bulk-Only Mass Storage Reset
		m.mu.Lock()
		m.state = stWaitCBW
		m.in, m.out = nil, m.out[:0]
		m.resets++
		m.mu.Unlock()
		return 0, nil
	case s.RequestType == 0xa1 && s.Request == 0xfe: // Get Max LUN
		if len(data) < 1 {
			return 0, usb.ErrStall
		}
		data[0] = 0
		return 1, nil
	}
	return 0, usb.ErrStall
}

func (m *MassStorage) bulkOut(ctx context.Context, buf []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.state {
	case stWaitCBW:
		if len(buf) != cbwLen || binary.LittleEndian.Uint32(buf[0:]) != cbwSignature ||
			buf[14] == 0 || buf[14] > 16 || buf[13]&0xf0 != 0 {
			// Invalid CBW: stall both pipes until reset recovery (BOT 6.6.1).
			m.state = stNeedReset
			m.dev.Stall(MassStorageIn)
			return 0, usb.ErrStall
		}
		m.commands++
		m.tag = binary.LittleEndian.Uint32(buf[4:])
		m.expect = binary.LittleEndian.Uint32(buf[8:])
		m.cdb = append(m.cdb[:0], buf[15:15+int(buf[14])]...)
		switch {
		case m.expect == 0:
			m.execute(nil, nil)
		case buf[12]&0x80 != 0:
			if cap(m.inBuf) < int(m.expect) {
				m.inBuf = make([]byte, m.expect)
			}
			in := m.inBuf[:m.expect]
			n := m.execute(nil, in)
			m.in = in[:n]
			m.state = stDataIn
		default:
			m.out = m.out[:0]
			m.state = stDataOut
		}
		return len(buf), nil
	case stDataOut:
		take := min(len(buf), int(m.expect)-len(m.out))
		m.out = append(m.out, buf[:take]...)
		if len(m.out) == int(m.expect) {
			m.execute(m.out, nil)
		}
		return take, nil
	}
	// The host sent data the device did not expect: stall.
	return 0, usb.ErrStall
}

// execute runs the CDB and prepares the CSW fields.
func (m *MassStorage) execute(out, in []byte) int {
	n, st, _ := m.target.Execute(m.cdb, out, in)
	m.residue = m.expect - uint32(n)
	m.status = 0
	if st != 0 {
		m.status = 1 // command failed; the host fetches sense with REQUEST SENSE
	}
	m.state = stCSW
	return n
}

func (m *MassStorage) bulkIn(ctx context.Context, buf []byte) (int, error) {
	m.mu.Lock()
	if m.state == stDataIn && m.dataInHook != nil {
		h := m.dataInHook
		m.mu.Unlock()
		if err := h(ctx); err != nil {
			return 0, err
		}
		m.mu.Lock()
	}
	defer m.mu.Unlock()
	switch m.state {
	case stDataIn:
		n := copy(buf, m.in)
		m.in = m.in[n:]
		if m.stallDataIn > 0 {
			// End the data phase with a stall instead of a short packet
			// (BOT 6.7.2, case Hi > Di); what was not sent is residue.
			m.stallDataIn--
			m.residue += uint32(len(m.in))
			m.in = nil
			m.state = stCSW
			return n, usb.ErrStall
		}
		if len(m.in) == 0 {
			m.state = stCSW
		}
		return n, nil
	case stCSW:
		if m.stallCSW > 0 {
			m.stallCSW--
			return 0, usb.ErrStall
		}
		if len(buf) < cswLen {
			return 0, usb.ErrOverflow
		}
		tag, status := m.tag, m.status
		if m.badTag > 0 {
			m.badTag--
			tag ^= 0xdeadbeef
		}
		if m.phaseErr > 0 {
			m.phaseErr--
			status = 2
		}
		binary.LittleEndian.PutUint32(buf[0:], cswSignature)
		binary.LittleEndian.PutUint32(buf[4:], tag)
		binary.LittleEndian.PutUint32(buf[8:], m.residue)
		buf[12] = status
		m.state = stWaitCBW
		return cswLen, nil
	case stNeedReset:
		return 0, usb.ErrStall
	}
	// Nothing to send: a real device NAKs until the host gives up.
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	return 0, ctx.Err()
}
