package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
	"github.com/drvkit/drvkit/hotplug/sim"
)

// TestSimBusOpenSGBeforeItsEvent: the bridge can start the sg driver on a
// node it learned from the simulator's sysfs before the node's own event
// went through the bus (a race that made the end-to-end test flaky).
func TestSimBusOpenSGBeforeItsEvent(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "devices/pci0000:00/0000:00:05.0/virtio1/host0/target0:0:0/0:0:0:3/scsi_generic/sg3")
	require.NoError(t, os.MkdirAll(dev, 0o755))
	link := filepath.Join(root, "class/scsi_generic/sg3")
	require.NoError(t, os.MkdirAll(filepath.Dir(link), 0o755))
	rel, err := filepath.Rel(filepath.Dir(link), dev)
	require.NoError(t, err)
	require.NoError(t, os.Symlink(rel, link))

	fake := usbtest.New()
	defer fake.Close()
	b := newSimBus(nil, fake, hidsim.New(), root)
	tr, err := b.openSG("/dev/sg3")
	require.NoError(t, err)
	require.NoError(t, tr.Close())
	require.Contains(t, b.disks, "scsi:0:0:0:3")

	_, err = b.openSG("/dev/sg9")
	require.ErrorIs(t, err, scsi.ErrNoDevice)
}

// TestSimBusKernelDriverChurn: claims and releases from several goroutines
// while the worker turns them into simulator steps. A kick left over for
// changes an earlier round had already taken made the worker close its idle
// channel twice, and the daemon panicked (seen in the daemon crash test).
func TestSimBusKernelDriverChurn(t *testing.T) {
	root := t.TempDir()
	sc, err := sim.ParseScenario("churn", strings.NewReader("plug usb 2-1 vid=46f4 pid=0001 serial=CHURN ifaces=08/06/50\n"))
	require.NoError(t, err)
	src, err := sim.New(sc, sim.Config{SysfsDir: root, Live: true})
	require.NoError(t, err)
	fake := usbtest.New()
	defer fake.Close()
	b := newSimBus(src, fake, hidsim.New(), root)
	b.followKernelDrivers(src.Inject, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer b.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The bridge's part: pull events, which plugs the fake device.
	events := make(chan error, 1)
	go func() {
		for {
			if _, err := b.Next(ctx); err != nil {
				events <- err
				return
			}
		}
	}()
	var h usb.Device
	require.Eventually(t, func() bool {
		h, err = fake.Open(ctx, usb.Selector{Bus: 2, Address: 2})
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "the fake device never appeared")
	defer h.Close()

	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 30 {
				if h.ClaimInterface(ctx, 0, 0) == nil {
					_ = h.ReleaseInterface(0)
				}
				if !b.idle() {
					require.NoError(t, b.waitKernelDrivers(ctx))
				}
			}
		}()
	}
	wg.Wait()
	require.NoError(t, b.waitKernelDrivers(ctx))
	require.True(t, b.idle())
	require.NoError(t, b.Close())
	require.Error(t, <-events)
}

// TestSimBusFreesUnwrittenDisks: plugging and unplugging many SCSI LUNs
// and USB sticks leaves no disk behind unless something was written to it
// (a replugged stick keeps its data), and a LUN's disk reads its label.
func TestSimBusFreesUnwrittenDisks(t *testing.T) {
	sysfs := t.TempDir()
	src, err := sim.New(&sim.Scenario{}, sim.Config{SkipWaits: true, SysfsDir: sysfs, Live: true})
	require.NoError(t, err)
	fake := usbtest.New()
	defer fake.Close()
	b := newSimBus(src, fake, hidsim.New(), sysfs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := b.Next(ctx); err != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		wg.Wait()
		_ = b.Close()
	}()
	inject := func(steps []string) {
		sc, err := sim.ParseScenarioFragment("t", strings.Join(steps, "\n"))
		require.NoError(t, err)
		require.NoError(t, src.Inject(ctx, sc))
	}
	disks := func() map[string]*scsisim.Disk {
		b.mu.Lock()
		defer b.mu.Unlock()
		return maps.Clone(b.disks)
	}

	const luns = 100
	var plug, unplug []string
	for i := range luns {
		plug = append(plug, fmt.Sprintf("scsi add 0:0:%d:%d", i%256, i/256))
		unplug = append(unplug, fmt.Sprintf("scsi remove 0:0:%d:%d", i%256, i/256))
	}
	plug = append(plug, "plug usb 2-1 vid=0781 pid=5567 serial=KEEP ifaces=08/06/50",
		"plug usb 2-2 vid=0781 pid=5567 serial=DROP ifaces=08/06/50")
	unplug = append(unplug, "unplug 2-1", "unplug 2-2")
	inject(plug)
	require.Len(t, disks(), luns+2+2) // the sticks' LUNs have an sg disk too

	tr, err := b.openSG("/dev/sg0")
	require.NoError(t, err)
	blk := make([]byte, 512)
	_, err = scsi.NewDevice(tr).Read(context.Background(), 0, blk)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(blk), "drvkit simulated disk 0:0:0:0\n"), "%q", blk[:40])
	require.NoError(t, tr.Close())
	keep := disks()["usb:KEEP"]
	require.NotNil(t, keep)
	copy(blk, "written")
	ktr := scsisim.NewTransport(keep)
	require.NoError(t, scsi.NewDevice(ktr).Write(context.Background(), 5, blk))
	require.NoError(t, ktr.Close())

	inject(unplug)
	left := disks()
	require.Len(t, left, 1, "only the written stick's disk is kept: %v", slices.Collect(maps.Keys(left)))
	require.Same(t, keep, left["usb:KEEP"])
}
