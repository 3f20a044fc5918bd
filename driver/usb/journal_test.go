package usb_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
)

var stick = usbtest.DeviceSpec{Bus: 2, Address: 3, Vendor: 0x46f4, Product: 1,
	Interfaces: []usbtest.InterfaceSpec{{Number: 0, Class: 8, SubClass: 6, Protocol: 0x50, KernelDriver: "usb-storage"}}}

// A daemon killed while it holds an interface: the next one finds the
// kernel driver missing and the journal saying who it was, and gives it
// back.
func TestJournalRecoversAfterCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kernel := filepath.Join(dir, "kernel.json")
	jpath := filepath.Join(dir, "journal.json")

	// First daemon: claims interface 0, usb-storage detached and journaled.
	fake1 := usbtest.New()
	require.NoError(t, fake1.PersistKernelState(kernel))
	dev1 := fake1.Plug(stick)
	j1, err := usb.OpenJournal(jpath)
	require.NoError(t, err)
	b1 := j1.Wrap(fake1)
	h, err := b1.Open(ctx, usb.Selector{Bus: 2, Address: 3})
	require.NoError(t, err)
	require.NoError(t, h.ClaimInterface(ctx, 0, 0))
	require.Equal(t, "usbfs", dev1.KernelDriver(0))
	require.Equal(t, []usb.JournalEntry{{Bus: 2, Address: 3, Vendor: 0x46f4, Product: 1, Interface: 0, Driver: "usb-storage"}}, j1.Entries())
	// SIGKILL: nothing is released; the journal and the kernel state stay.

	// Second daemon: the kernel dropped the dead claim, nothing is bound.
	fake2 := usbtest.New()
	require.NoError(t, fake2.PersistKernelState(kernel))
	dev2 := fake2.Plug(stick)
	require.Equal(t, "", dev2.KernelDriver(0), "the kernel does not rebind after the claimer died")
	j2, err := usb.OpenJournal(jpath)
	require.NoError(t, err)
	require.Len(t, j2.Entries(), 1)
	done, err := j2.Recover(ctx, j2.Wrap(fake2))
	require.NoError(t, err)
	require.Len(t, done, 1)
	require.Equal(t, "usb-storage", dev2.KernelDriver(0), "re-attached")
	require.Empty(t, j2.Entries())

	// An orderly claim and release leaves the journal empty.
	b2 := j2.Wrap(fake2)
	h2, err := b2.Open(ctx, usb.Selector{Bus: 2, Address: 3})
	require.NoError(t, err)
	require.NoError(t, h2.ClaimInterface(ctx, 0, 0))
	require.Len(t, j2.Entries(), 1)
	require.NoError(t, h2.ReleaseInterface(0))
	require.Empty(t, j2.Entries())
	require.NoError(t, h2.Close())
	require.NoError(t, b2.Close())
	require.NoError(t, fake1.Close())
	_ = h
}

// Entries of devices that are gone are crossed out: a replugged device is
// bound afresh by the kernel.
func TestJournalDropsGoneDevices(t *testing.T) {
	ctx := context.Background()
	jpath := filepath.Join(t.TempDir(), "journal.json")
	fake := usbtest.New()
	fake.Plug(stick)
	j, err := usb.OpenJournal(jpath)
	require.NoError(t, err)
	h, err := j.Wrap(fake).Open(ctx, usb.Selector{Bus: 2, Address: 3})
	require.NoError(t, err)
	require.NoError(t, h.ClaimInterface(ctx, 0, 0))
	j2, err := usb.OpenJournal(jpath)
	require.NoError(t, err)
	done, err := j2.Recover(ctx, usbtest.New())
	require.NoError(t, err)
	require.Empty(t, done)
	require.Empty(t, j2.Entries())
	require.NoError(t, h.Close())
	require.NoError(t, fake.Close())
}

// The journal is written ahead of the detach: at the moment the kernel
// driver leaves the interface, the file on disk already names it, so a
// daemon killed right then leaves nothing unrecorded. A claim that fails
// crosses its entry out again.
func TestJournalWritesAheadOfDetach(t *testing.T) {
	ctx := context.Background()
	jpath := filepath.Join(t.TempDir(), "journal.json")
	fake := usbtest.New()
	defer fake.Close()
	fake.Plug(stick)
	want := usb.JournalEntry{Bus: 2, Address: 3, Vendor: 0x46f4, Product: 1, Interface: 0, Driver: "usb-storage"}
	var atDetach [][]usb.JournalEntry
	fake.OnKernelDriver(func(_ usbtest.DeviceSpec, iface int, from, to string) {
		if from == "usb-storage" && to == "usbfs" {
			// What a daemon starting after a SIGKILL right now would read.
			j, err := usb.OpenJournal(jpath)
			if err != nil {
				atDetach = append(atDetach, nil)
				return
			}
			atDetach = append(atDetach, j.Entries())
		}
	})
	j, err := usb.OpenJournal(jpath)
	require.NoError(t, err)
	b := j.Wrap(fake)
	h, err := b.Open(ctx, usb.Selector{Bus: 2, Address: 3})
	require.NoError(t, err)

	// A claim that fails (no such alternate setting) detaches nothing and
	// leaves nothing on record.
	require.ErrorIs(t, h.ClaimInterface(ctx, 0, 7), usb.ErrNotFound)
	require.Empty(t, j.Entries())
	require.Empty(t, atDetach)
	reread, err := usb.OpenJournal(jpath)
	require.NoError(t, err)
	require.Empty(t, reread.Entries(), "the file too")

	require.NoError(t, h.ClaimInterface(ctx, 0, 0))
	require.Equal(t, [][]usb.JournalEntry{{want}}, atDetach, "on disk before the detach")
	require.Equal(t, []usb.JournalEntry{want}, j.Entries(), "once, not twice")
	require.NoError(t, h.Close())
	require.Empty(t, j.Entries())
	require.NoError(t, b.Close())
}

// A daemon killed after writing ahead but before detaching leaves an entry
// for a driver that is still bound: the next daemon's recovery finds it
// bound, changes nothing and crosses it out.
func TestJournalAheadEntryStillBound(t *testing.T) {
	ctx := context.Background()
	jpath := filepath.Join(t.TempDir(), "journal.json")
	require.NoError(t, writeFile(jpath, `[{"bus":2,"address":3,"vendor":17908,"product":1,"interface":0,"driver":"usb-storage"}]`))
	fake := usbtest.New()
	defer fake.Close()
	dev := fake.Plug(stick)
	j, err := usb.OpenJournal(jpath)
	require.NoError(t, err)
	require.Len(t, j.Entries(), 1)
	done, err := j.Recover(ctx, j.Wrap(fake))
	require.NoError(t, err)
	require.Empty(t, done, "nothing was re-attached")
	require.Equal(t, "usb-storage", dev.KernelDriver(0))
	require.Empty(t, j.Entries())
	require.Empty(t, dev.Events(), "nothing was detached or attached")
}

func TestJournalBadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j.json")
	require.NoError(t, writeFile(p, "{not json"))
	_, err := usb.OpenJournal(p)
	require.ErrorIs(t, err, usb.ErrJournal)
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }

// Record and Forget keep the journal of a detach made outside a wrapped
// backend's claim (a usbfs handle granted to a driver process).
func TestJournalRecordForget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.json")
	j, err := usb.OpenJournal(path)
	require.NoError(t, err)
	e := usb.JournalEntry{Bus: 1, Address: 4, Vendor: 0x46f4, Product: 1, Interface: 0, Driver: "usb-storage"}
	require.NoError(t, j.Record(e))
	require.NoError(t, j.Record(e), "twice is once")
	again, err := usb.OpenJournal(path)
	require.NoError(t, err)
	require.Equal(t, []usb.JournalEntry{e}, again.Entries(), "on disk before the detach")
	require.ErrorIs(t, j.Record(usb.JournalEntry{Bus: 1, Address: 4, Driver: "../x"}), usb.ErrJournal)
	require.NoError(t, j.Forget(e))
	require.Empty(t, j.Entries())

	fake := usbtest.New()
	defer fake.Close()
	wrapped := j.Wrap(fake)
	require.Same(t, j, usb.JournalOf(wrapped))
	require.Nil(t, usb.JournalOf(fake))
	require.Equal(t, usb.Backend(fake), wrapped.(interface{ Unwrap() usb.Backend }).Unwrap())
}
