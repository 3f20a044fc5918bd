package peercred

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// maxLine bounds one /proc/net/tcp line (about 150 bytes in practice).
const maxLine = 4096

// findTCPOwner scans a /proc/net/tcp or /proc/net/tcp6 listing for the
// socket whose local address is local and whose remote address is remote,
// and returns its owner's uid.
func findTCPOwner(r io.Reader, local, remote netip.AddrPort) (uint32, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxLine)
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			return 0, fmt.Errorf("malformed line %q: %d fields", sc.Text(), len(f))
		}
		l, err := parseHexAddrPort(f[1])
		if err != nil {
			return 0, err
		}
		if l != local {
			continue
		}
		rm, err := parseHexAddrPort(f[2])
		if err != nil {
			return 0, err
		}
		if rm != remote {
			continue
		}
		uid, err := strconv.ParseUint(f[7], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("malformed uid %q", f[7])
		}
		return uint32(uid), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, ErrNotFound
}

// parseHexAddrPort parses the kernel's "0100007F:1F90": the address as
// 32-bit words in the host's byte order (little-endian on every platform
// Linux/drvkit runs on here: amd64, arm64, riscv64), then the port in hex.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("malformed address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("malformed port in %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("malformed address %q", s)
	}
	var out [16]byte
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(out[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	var addr netip.Addr
	if len(raw) == 4 {
		addr = netip.AddrFrom4([4]byte(out[:4]))
	} else {
		addr = netip.AddrFrom16(out).Unmap()
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
