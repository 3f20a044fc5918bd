package devgrant

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/sg"
)

// SCSI: a SCSIDevice nub's /dev/sgN node (its "sg" property), for the "sg"
// resource (sg.Opener, sg.OpenerKey). When the daemon's opener gives a
// kernel sg node (scsi.SG) the daemon passes that node ("sg"); any other
// transport (the simulator's disks) is served over a socket ("sg-socket").
const (
	SCSIProviderClass = sg.NubClass
	KindSG            = "sg"
	KindSGSocket      = "sg-socket"
)

// SGKey is the SCSI resource, as the driver side provides it.
var SGKey = sg.OpenerKey

// SCSI op: execute one command.
//
//	request: dir u8, timeout ms u32, data-in length u32, CDB length u8, CDB, data-out
//	reply:   status u8, residual i32, sense length u8, data-in length u32, data-in, sense
const opSGExecute byte = 0x20

const sgReplyHead = 10

var sgCodes = codeTable{
	{codeNoDevice, scsi.ErrNoDevice},
	{codeClosed, scsi.ErrClosed},
	{codeTimeout, scsi.ErrTimeout},
	{codeInvalid, scsi.ErrInvalidRequest},
	{codeBusy, scsi.ErrBusy},
	{codeNotGranted, ErrNotGranted},
}

func init() {
	Register(Class{ProviderClass: SCSIProviderClass, Resource: SGKey.Name(), Grant: grantSG, Provide: provideSG})
}

func grantSG(ctx context.Context, res *drivertable.Resources, nub *driver.Service) ([]File, func() error, error) {
	node, ok := nub.Properties().String(sg.PropSGNode)
	if !ok || node == "" {
		return nil, nil, &OpError{Op: "grant", Nub: nub.String(), Err: fmt.Errorf("%w (%s)", ErrNoNode, sg.PropSGNode)}
	}
	fail := func(err error) ([]File, func() error, error) {
		return nil, nil, grantError(nub, node, err)
	}
	open, err := SGKey.From(res)
	if err != nil {
		return fail(err)
	}
	t, err := open(node)
	if err != nil {
		return fail(err)
	}
	if k, ok := t.(*scsi.SG); ok {
		// The kernel's node, checked by the opener (SG_GET_VERSION_NUM):
		// the driver gets the node itself.
		f, err := dupFile(k.File())
		t.Close()
		if err != nil {
			return fail(err)
		}
		return []File{{Resource: SGKey.Name(), Node: node, Kind: KindSG, File: f}}, nil, nil
	}
	f, release, err := serveDevice(SGKey.Name(), node, KindSGSocket, sgHandler(t), sgCodes, t.Close)
	if err != nil {
		return fail(err)
	}
	return []File{f}, release, nil
}

// sgHandler serves a scsi.Transport's Execute.
func sgHandler(t scsi.Transport) handler {
	return func(ctx context.Context, op byte, body []byte, out []byte) ([]byte, error) {
		if op != opSGExecute {
			return nil, fmt.Errorf("%w: unknown SCSI op %#x", ErrProtocol, op)
		}
		cmd, in, err := parseSGRequest(body)
		if err != nil {
			return nil, err
		}
		head := len(out)
		out = slices.Grow(out, sgReplyHead+in+255)[:head+sgReplyHead+in]
		if cmd.Dir == scsi.DirIn {
			cmd.Data = out[head+sgReplyHead:]
			clear(cmd.Data)
		}
		res, err := t.Execute(ctx, &cmd)
		if err != nil {
			return nil, err
		}
		sense := res.Sense[:min(len(res.Sense), 255)]
		out[head] = byte(res.Status)
		binary.LittleEndian.PutUint32(out[head+1:], uint32(int32(res.Residual)))
		out[head+5] = byte(len(sense))
		binary.LittleEndian.PutUint32(out[head+6:], uint32(in))
		return append(out, sense...), nil
	}
}

func parseSGRequest(body []byte) (scsi.Command, int, error) {
	r := reader{b: body}
	dir := scsi.Direction(r.u8())
	ms := r.u32()
	in := r.size()
	cdb := r.need(int(r.u8()))
	data := r.rest()
	if err := r.done(); err != nil {
		return scsi.Command{}, 0, err
	}
	cmd := scsi.Command{CDB: cdb, Dir: dir, Timeout: time.Duration(ms) * time.Millisecond}
	switch {
	case len(cdb) == 0:
		return cmd, 0, fmt.Errorf("%w: empty CDB", scsi.ErrInvalidRequest)
	case dir > scsi.DirOut:
		return cmd, 0, fmt.Errorf("%w: direction %d", scsi.ErrInvalidRequest, dir)
	case dir == scsi.DirIn && len(data) != 0, dir != scsi.DirIn && in != 0, dir == scsi.DirNone && len(data) != 0:
		return cmd, 0, fmt.Errorf("%w: data does not match direction %s", scsi.ErrInvalidRequest, dir)
	}
	if dir == scsi.DirOut {
		cmd.Data = data
	}
	return cmd, in, nil
}

func appendSGRequest(b []byte, cmd *scsi.Command) ([]byte, error) {
	if len(cmd.CDB) == 0 || len(cmd.CDB) > 255 {
		return nil, fmt.Errorf("%w: CDB of %d bytes", scsi.ErrInvalidRequest, len(cmd.CDB))
	}
	if len(cmd.Data) > MaxData || cmd.Dir > scsi.DirOut {
		return nil, fmt.Errorf("%w: %d data bytes over the device socket's %d", scsi.ErrInvalidRequest, len(cmd.Data), MaxData)
	}
	ms := uint32(0)
	if cmd.Timeout > 0 {
		ms = uint32(min(cmd.Timeout.Milliseconds(), 1<<32-1))
		ms = max(ms, 1)
	}
	in := 0
	if cmd.Dir == scsi.DirIn {
		in = len(cmd.Data)
	}
	b = append(b, byte(cmd.Dir))
	b = binary.LittleEndian.AppendUint32(b, ms)
	b = binary.LittleEndian.AppendUint32(b, uint32(in))
	b = append(b, byte(len(cmd.CDB)))
	b = append(b, cmd.CDB...)
	if cmd.Dir == scsi.DirOut {
		b = append(b, cmd.Data...)
	}
	return b, nil
}

// parseSGReply copies data-in into data and returns the result (its sense
// aliases body).
func parseSGReply(body, data []byte) (scsi.Result, error) {
	r := reader{b: body}
	st := r.u8()
	resid := int32(r.u32())
	sl := int(r.u8())
	n := r.size()
	d := r.need(n)
	sense := r.need(sl)
	if err := r.done(); err != nil {
		return scsi.Result{}, err
	}
	copy(data, d)
	res := scsi.Result{Status: scsi.Status(st), Residual: int(resid)}
	if sl > 0 {
		res.Sense = sense
	}
	return res, nil
}

func provideSG(r *drivertable.Resources, files []Received) {
	socks := newSockets(sgCodes, scsi.ErrNoDevice)
	open := sg.Opener(func(path string) (scsi.Transport, error) {
		f, err := find(files, path)
		if err != nil {
			return nil, &scsi.OpError{Op: "open " + path, Err: err}
		}
		switch f.Kind {
		case KindSG:
			return scsi.SGFromFile(f.File, path)
		case KindSGSocket:
			d, err := openSockDev(socks, f)
			if err != nil {
				return nil, &scsi.OpError{Op: "open " + path, Err: err}
			}
			return &sgSock{d: d}, nil
		}
		return nil, &scsi.OpError{Op: "open " + path, Err: fmt.Errorf("%w: kind %q", ErrNotGranted, f.Kind)}
	})
	drivertable.Provide(r, SGKey, func() (sg.Opener, error) { return open, nil })
}

// sgSock is a scsi.Transport served over a socket.
type sgSock struct{ d *sockDev }

var _ scsi.Transport = (*sgSock)(nil)

func (s *sgSock) Execute(ctx context.Context, cmd *scsi.Command) (scsi.Result, error) {
	op := "sg_io " + s.d.node
	pkt, err := appendSGRequest(request(opSGExecute, 10+len(cmd.CDB)+len(cmd.Data)), cmd)
	if err != nil {
		return scsi.Result{}, &scsi.OpError{Op: op, Err: err}
	}
	// The daemon's transport bounds the command by its timeout; the
	// context's deadline, if earlier, is sent as the timeout.
	if dl, ok := ctx.Deadline(); ok {
		if to := time.Until(dl); to > 0 && (cmd.Timeout <= 0 || to < cmd.Timeout) {
			binary.LittleEndian.PutUint32(pkt[headerLen+1:], uint32(max(to.Milliseconds(), 1)))
		}
	}
	body, err := s.d.call(ctx, pkt)
	if err != nil {
		if errors.Is(err, errClosedSocket) {
			err = scsi.ErrClosed
		}
		return scsi.Result{}, &scsi.OpError{Op: op, Err: err}
	}
	res, err := parseSGReply(body, cmd.Data)
	if err != nil {
		return scsi.Result{}, &scsi.OpError{Op: op, Err: err}
	}
	return res, nil
}

func (s *sgSock) Close() error {
	if !s.d.close() {
		return &scsi.OpError{Op: "close " + s.d.node, Err: scsi.ErrClosed}
	}
	return nil
}
