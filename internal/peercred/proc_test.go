package peercred

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const tcp4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1087 1 00000000a474bc93 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 2001 1 00000000a474bc93 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 00000000a474bc93 20 4 30 10 -1
`

const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:D431 00000000000000000000000001000000:1F90 01 00000000:00000000 00:00000000 00000000 65534        0 3002 1 0000000000000000 20 4 30 10 -1
   2: 0000000000000000FFFF00000100007F:D432 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  4242        0 3003 1 0000000000000000 20 4 30 10 -1
`

func TestFindTCPOwner(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name, listing string
		local, remote netip.AddrPort
		uid           uint32
		err           error
	}{
		{"v4 client", tcp4, ap("127.0.0.1:50000"), ap("127.0.0.1:8080"), 1000, nil},
		{"v4 server side", tcp4, ap("127.0.0.1:8080"), ap("127.0.0.1:50000"), 0, nil},
		{"v4 absent", tcp4, ap("127.0.0.1:50001"), ap("127.0.0.1:8080"), 0, ErrNotFound},
		{"v6 loopback", tcp6, ap("[::1]:54321"), ap("[::1]:8080"), 65534, nil},
		{"v4-mapped in tcp6", tcp6, ap("127.0.0.1:54322"), ap("127.0.0.1:8080"), 4242, nil},
		{"header only", "  sl  local_address\n", ap("127.0.0.1:1"), ap("127.0.0.1:2"), 0, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uid, err := findTCPOwner(strings.NewReader(tt.listing), tt.local, tt.remote)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.uid, uid)
		})
	}
}

func TestFindTCPOwnerMalformed(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, line := range []string{
		"   0: 0100007F:1F90 00000000:0000 0A",                                        // too few fields
		"   0: 0100007G:1F90 0100007F:C350 01 0:0 0:0 0 0 0 1",                        // bad hex
		"   0: 0100007F:1F90 0100007F:C350 01 0:0 0:0 0 nobody 0 1",                   // bad uid
		"   0: 0100007F1F90 0100007F:C350 01 0:0 0:0 0 0 0 1",                         // no colon
		"   0: 0100007F00:1F90 0100007F:C350 01 0:0 0:0 0 0 0 1",                      // 5-byte address
		"   0: 0100007F:11F90 0100007F:C350 01 0:0 0:0 0 0 0 1",                       // port overflow
		"   0: 0100007F:1F90 0100007F:C350 01 0:0 0:0 0 " + strings.Repeat("9", 5000), // overlong
	} {
		_, err := findTCPOwner(strings.NewReader("header\n"+line+"\n"), ap("127.0.0.1:8080"), ap("127.0.0.1:50000"))
		require.Error(t, err, line)
		require.NotErrorIs(t, err, ErrNotFound, line)
	}
}

func FuzzFindTCPOwner(f *testing.F) {
	f.Add(tcp4, "127.0.0.1:50000", "127.0.0.1:8080")
	f.Add(tcp6, "[::1]:54321", "[::1]:8080")
	seeds, _ := filepath.Glob("testdata/*.txt")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		require.NoError(f, err)
		f.Add(string(b), "127.0.0.1:50000", "127.0.0.1:8080")
	}
	f.Fuzz(func(t *testing.T, listing, local, remote string) {
		l, err1 := netip.ParseAddrPort(local)
		r, err2 := netip.ParseAddrPort(remote)
		if err1 != nil || err2 != nil {
			return
		}
		uid, err := findTCPOwner(strings.NewReader(listing), l, r)
		if err != nil && uid != 0 {
			t.Fatalf("uid %d with error %v", uid, err)
		}
	})
}
