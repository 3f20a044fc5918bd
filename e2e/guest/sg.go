//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/e2e/agentproto"
)

// inquiry sends a standard INQUIRY through SG_IO, with drvkit's own SCSI
// layer (driver/scsi): the path the sg driver takes.
func inquiry(dev string) (*agentproto.Inquiry, error) {
	if !strings.HasPrefix(dev, "/dev/sg") {
		return nil, fmt.Errorf("inquiry: %q is not an sg node", dev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	sg, err := scsi.OpenSG(dev)
	if err != nil {
		return nil, fmt.Errorf("inquiry: %w", err)
	}
	d := scsi.NewDevice(sg)
	defer d.Close()
	inq, err := d.Inquiry(ctx)
	if err != nil {
		return nil, fmt.Errorf("inquiry %s: %w", dev, err)
	}
	return &agentproto.Inquiry{
		Device: dev, PeripheralType: int(inq.Type),
		Vendor: inq.Vendor, Product: inq.Product, Revision: inq.Revision,
		Ms: float64(time.Since(t0).Microseconds()) / 1000,
	}, nil
}

// listSG lists /sys/class/scsi_generic and the SCSI device behind each node.
func listSG() ([]agentproto.SGDevice, error) {
	ents, err := os.ReadDir("/sys/class/scsi_generic")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []agentproto.SGDevice
	for _, e := range ents {
		base := "/sys/class/scsi_generic/" + e.Name() + "/device"
		real, err := filepath.EvalSymlinks(base)
		if err != nil {
			continue // removed while we looked
		}
		rd := func(name string) string {
			b, _ := os.ReadFile(base + "/" + name)
			return strings.TrimSpace(string(b))
		}
		typ, _ := strconv.Atoi(rd("type"))
		out = append(out, agentproto.SGDevice{
			Dev: "/dev/" + e.Name(), HCTL: filepath.Base(real),
			Vendor: rd("vendor"), Model: rd("model"), Type: typ, SysDev: real,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dev < out[j].Dev })
	return out, nil
}
