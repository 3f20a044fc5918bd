package scsi

// sgIOHdr mirrors struct sg_io_hdr from <scsi/sg.h> (the SG v3 interface).
// Its layout is checked against the C compiler's in sgio_linux_test.go:
// 88 bytes on 64-bit Linux, 64 on 32-bit.
type sgIOHdr struct {
	InterfaceID    int32   // 'S'
	DxferDirection int32   // sgDxfer*
	CmdLen         uint8   // CDB length
	MxSbLen        uint8   // sense buffer size
	IovecCount     uint16  // 0: no scatter-gather
	DxferLen       uint32  // data length
	Dxferp         uintptr // data buffer
	Cmdp           uintptr // CDB
	Sbp            uintptr // sense buffer
	Timeout        uint32  // milliseconds
	Flags          uint32
	PackID         int32
	UsrPtr         uintptr
	Status         uint8 // SCSI status
	MaskedStatus   uint8
	MsgStatus      uint8
	SbLenWr        uint8 // sense bytes written
	HostStatus     uint16
	DriverStatus   uint16
	Resid          int32
	Duration       uint32
	Info           uint32
}

const (
	sgIO            = 0x2285
	sgGetVersionNum = 0x2282

	sgDxferNone    = -1
	sgDxferToDev   = -2
	sgDxferFromDev = -3

	// sgMinVersion is the first sg driver with the v3 (sg_io_hdr) interface.
	sgMinVersion = 30000
)
