package wire

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/frames")

// TestWriteSeeds writes the fuzz seed corpus: one valid frame of each type
// plus the malformed shapes the decoder must refuse.
func TestWriteSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to rewrite testdata/frames")
	}
	dir := filepath.Join("testdata", "frames")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	seeds := map[string]Frame{
		"hello":        {Type: TypeHello, ID: 1, Control: []byte(`{"protocol":"drvkit-userclient","versions":[1]}`)},
		"welcome":      {Type: TypeWelcome, ID: 1, Control: []byte(`{"protocol":"drvkit-userclient","version":1,"max_frame":1048576,"pid":42,"uid":0,"gid":0}`)},
		"open":         {Type: TypeOpen, ID: 2, Control: []byte(`{"match":{"class":"SCSIDevice","properties":{"vendor":"QEMU"}}}`)},
		"close":        {Type: TypeClose, ID: 3, Control: []byte(`{"handle":1}`)},
		"call":         {Type: TypeCall, ID: 4, Control: []byte(`{"handle":1,"method":"read"}`), Data: []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}},
		"reply":        {Type: TypeReply, ID: 4, Data: []byte("0123456789")},
		"notification": {Type: TypeNotification, Control: []byte(`{"handle":1,"type":"ServiceIsTerminated","service":7}`)},
		"error":        {Type: TypeError, Flags: FlagFatal, Control: []byte(`{"code":"protocol","message":"unknown frame type 200"}`)},
		"admin":        {Type: TypeAdmin, ID: 5, Control: []byte(`{"op":"terminate","args":{"id":7}}`)},
		"ping":         {Type: TypePing, ID: 6},
		"hello_v2":     {Type: TypeHello, ID: 1, Control: []byte(`{"protocol":"drvkit-userclient","versions":[2,1]}`)},
		"welcome_v2":   {Type: TypeWelcome, ID: 1, Control: []byte(`{"protocol":"drvkit-userclient","version":2,"max_frame":1048576,"pid":42,"uid":0,"gid":0,"max_inflight":64}`)},
		"cancel":       {Type: TypeCancel, ID: 4},
		"cancelled":    {Type: TypeError, ID: 4, Control: []byte(`{"code":"cancelled","message":"call \"read\" cancelled by the client: context canceled"}`)},
	}
	for name, f := range seeds {
		b, err := AppendFrame(nil, &f, DefaultMaxFrame)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".bin"), b, 0o644))
	}
	bad := map[string][]byte{
		"giant_length":    {0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0},
		"short_length":    {0, 0, 0, 2, 1, 0},
		"unknown_type":    {0, 0, 0, 16, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},
		"control_overrun": {0, 0, 0, 16, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9},
		"truncated":       {0, 0, 0, 40, 5, 0, 0, 0},
		// Cancel frames carry nothing but their header and name a request.
		"cancel_control": {0, 0, 0, 18, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 2, '{', '}'},
		"cancel_data":    {0, 0, 0, 17, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 1},
		"cancel_id_zero": {0, 0, 0, 16, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"cancel_fatal":   {0, 0, 0, 16, 11, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0},
	}
	for name, b := range bad {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".bin"), b, 0o644))
	}
}
