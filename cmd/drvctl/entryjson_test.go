package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzAppendEntry holds the daemon's hand-written entry encoder to
// encoding/json's output, byte for byte.
func FuzzAppendEntry(f *testing.F) {
	f.Add(uint64(7), "SCSIDevice", "0:0:0:0", "", true, int64(3), "vendor", "QEMU", int64(-1), 2.5, []byte{1, 2})
	f.Add(uint64(1), "UserClient", "pid<42>&\"x\"", "sg", false, int64(0), "comm", "drvctl\u2028\xff\x00", int64(1<<40), 1e21, []byte(nil))
	f.Add(uint64(0), "", "", "ünï", true, int64(-5), "", "", int64(0), 0.0, []byte{})
	f.Fuzz(func(t *testing.T, id uint64, class, name, drv string, flag bool, n int64, key, sval string, ival int64, fval float64, bval []byte) {
		e := serviceEntry{ID: id, Class: class, Name: name, Driver: drv, Registered: flag, Matched: !flag, Active: flag,
			Starting: !flag, Busy: int(n), Retain: int(-n), Providers: []uint64{id, uint64(ival)}, OpenBy: []uint64{},
			Properties: map[string]any{key: sval, key + "i": ival, key + "u": uint64(ival), key + "b": flag,
				key + "n": nil, key + "bytes": bval, key + "list": []string{sval, name}, key + "i32": int32(ival), key + "u16": uint16(ival)}}
		if fval == fval && fval < 1e300 && fval > -1e300 { // NaN and infinities are no JSON
			e.Properties[key+"f"] = fval
		}
		if flag {
			e.Properties = nil
		}
		want, err := json.Marshal(&e)
		require.NoError(t, err)
		require.Equal(t, string(want), string(appendEntry(nil, &e)))
	})
}

// BenchmarkAppendEntry encodes a SCSI LUN's entry by hand and, in the same
// run, with encoding/json (what the daemon did before): ns per service and
// the ratio.
func BenchmarkAppendEntry(b *testing.B) {
	e := serviceEntry{ID: 123456, Class: "SCSIDevice", Name: "3:0:12:7", Registered: true, Matched: true, Active: true,
		Retain: 4, Providers: []uint64{123400}, Clients: []uint64{123457},
		Properties: map[string]any{"devpath": "/devices/pci0000:00/0000:00:05.0/virtio2/host3/target3:0:12/3:0:12:7",
			"type": int64(0), "vendor": "QEMU", "model": "QEMU HARDDISK", "rev": "2.5+", "hctl": "3:0:12:7",
			"sg": "/dev/sg12", "lun": uint64(7), "removable": false}}
	var buf []byte
	var one []byte
	b.ReportAllocs()
	var hand, std float64
	for b.Loop() {
		t0 := nowNanos()
		one = appendEntry(one[:0], &e)
		t1 := nowNanos()
		j, _ := json.Marshal(&e)
		buf = append(buf[:0], j...)
		t2 := nowNanos()
		hand += float64(t1 - t0)
		std += float64(t2 - t1)
	}
	b.ReportMetric(hand/float64(b.N), "hand-ns/service")
	b.ReportMetric(std/float64(b.N), "encoding/json-ns/service")
	b.ReportMetric(hand/std, "hand/encoding-json")
}

func nowNanos() int64 { return time.Now().UnixNano() }
