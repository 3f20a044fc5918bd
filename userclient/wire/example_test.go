package wire_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/drvkit/drvkit/userclient/wire"
)

// A peer writes frames with AppendFrame and reads them from the stream
// with a Decoder: a JSON control payload and raw data per frame.
func ExampleDecoder() {
	var stream []byte
	hello, _ := json.Marshal(wire.HelloMsg{Protocol: wire.ProtocolName, Versions: []int{wire.Version, 3, 2, wire.MinVersion}, Client: "example"})
	stream, _ = wire.AppendFrame(stream, &wire.Frame{Type: wire.TypeHello, ID: 1, Control: hello}, wire.DefaultMaxFrame)
	call, _ := json.Marshal(wire.HandleMsg{Handle: 7, Method: "read"})
	stream, _ = wire.AppendFrame(stream, &wire.Frame{Type: wire.TypeCall, ID: 2, Control: call, Data: []byte{0, 0, 0, 0}}, wire.DefaultMaxFrame)

	d := wire.NewDecoder(bytes.NewReader(stream), 0)
	for {
		f, err := d.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s id %d: %s + %d bytes\n", f.Type, f.ID, f.Control, len(f.Data))
	}

	// A stream cut inside a frame is a protocol error.
	_, err := wire.NewDecoder(bytes.NewReader(stream[:20]), 0).ReadFrame()
	fmt.Println(errors.Is(err, wire.ErrProtocol), errors.Is(err, io.ErrUnexpectedEOF))
	// Output:
	// hello id 1: {"protocol":"drvkit-userclient","versions":[4,3,2,1],"client":"example"} + 0 bytes
	// call id 2: {"handle":7,"method":"read"} + 4 bytes
	// true true
}

// Errors cross the socket as codes: the server picks one with CodeOf, and
// the client's RemoteError matches the same sentinel with errors.Is.
func ExampleDecodeError() {
	// The server: a call failed because the device was unplugged.
	cause := fmt.Errorf("read 2-1:1.0: %w", wire.ErrNoDevice)
	control, _ := json.Marshal(wire.ErrorMsg{Code: wire.CodeOf(cause), Message: cause.Error()})
	fmt.Println(string(control))

	// The client.
	err := wire.DecodeError(control)
	fmt.Println(err)
	fmt.Println(errors.Is(err, wire.ErrNoDevice), errors.Is(err, wire.ErrTerminated))
	// Output:
	// {"code":"no_device","message":"read 2-1:1.0: no such device"}
	// read 2-1:1.0: no such device
	// true false
}

// The server encodes a notification for each open handle of a terminated
// service without reflection; DecodeNotificationMsg reads it back.
func ExampleAppendNotification() {
	b := wire.AppendNotification(nil, 3, wire.Notification{
		Type: wire.ServiceIsTerminated, Service: 42, Cause: "provider", RootCause: "unplug"})
	f, _, err := wire.DecodeFrame(b, wire.DefaultMaxFrame)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %s\n", f.Type, f.Control)
	n, _ := wire.DecodeNotificationMsg(f.Control, "")
	fmt.Printf("handle %d: %s, service %d, cause %s (root cause %s)\n", n.Handle, n.Type, n.Service, n.Cause, n.RootCause)
	// Output:
	// notification: {"handle":3,"type":"ServiceIsTerminated","service":42,"cause":"provider","root_cause":"unplug"}
	// handle 3: ServiceIsTerminated, service 42, cause provider (root cause unplug)
}

// A Match selects services the way `drvctl` and applications name them.
func ExampleMatch_Matches() {
	m := wire.Match{Class: "SCSIDevice", Properties: map[string]string{"vendor": "QEMU"}}
	fmt.Println(m)
	fmt.Println(m.Matches(wire.ServiceInfo{ID: 5, Class: "SCSIDevice", Properties: map[string]string{"vendor": "QEMU", "type": "0"}}))
	fmt.Println(m.Matches(wire.ServiceInfo{ID: 6, Class: "SCSIDevice", Properties: map[string]string{"vendor": "SanDisk"}}))
	// Output:
	// class=SCSIDevice vendor=QEMU
	// true
	// false
}
