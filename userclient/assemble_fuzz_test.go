package userclient

import (
	"bytes"
	"errors"
	"testing"

	"github.com/drvkit/drvkit/userclient/wire"
)

// FuzzAssembly feeds a stream of frames (as a server would send them for
// one request) to the reassembly: part frames, then the reply frame that
// ends them. Whatever the cut, the reply is the concatenation of every
// frame's control and data, or ErrReplyTooLarge past the limit.
func FuzzAssembly(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte, limit uint16) {
		var a assembly
		var wantCtl, wantData []byte
		for len(stream) > 0 {
			fr, n, err := wire.DecodeFrame(stream, wire.DefaultMaxFrame)
			if err != nil {
				return
			}
			stream = stream[n:]
			wantCtl = append(wantCtl, fr.Control...)
			wantData = append(wantData, fr.Data...)
			total := len(wantCtl) + len(wantData)
			switch fr.Type {
			case wire.TypePart:
				if !a.add(&fr, int(limit)) && total <= int(limit) {
					t.Fatalf("refused %d bytes under the limit %d", total, limit)
				}
			case wire.TypeReply:
				ctl, data, err := a.finish(&fr, int(limit))
				if total > int(limit) && a.n > 0 || total > int(limit) && err != nil {
					if !errors.Is(err, ErrReplyTooLarge) {
						t.Fatalf("%d bytes over the limit %d: err %v", total, limit, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("reply of %d bytes under the limit %d: %v", total, limit, err)
				}
				if !bytes.Equal(ctl, wantCtl) || !bytes.Equal(data, wantData) {
					t.Fatalf("reassembled %q %q, want %q %q", ctl, data, wantCtl, wantData)
				}
				if len(ctl) == 0 && ctl != nil || len(data) == 0 && data != nil {
					t.Fatal("empty payloads are nil")
				}
				if len(stream) > 0 {
					// The next request's parts start afresh.
					a, wantCtl, wantData = assembly{}, nil, nil
				}
			default:
				return
			}
		}
	})
}
