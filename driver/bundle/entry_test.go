package bundle_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

func TestMain(m *testing.M) { leaktest.Main(m) }

type inproc struct{}

// failing is a bundle driver whose Start fails as an entry without a host
// does, and says so.
type failing struct{ record func(error) }

func (f failing) Start(context.Context, *driver.Service) error {
	f.record(bundle.ErrNotSupported)
	return bundle.ErrNotSupported
}
func (failing) Stop(*driver.Service) {}

func (inproc) Start(context.Context, *driver.Service) error { return nil }
func (inproc) Stop(*driver.Service)                         {}

// TestEntryMatchesButDoesNotStart: a bundle's personalities take part in
// matching with the manifest's keys and masks, but an instance that wins
// fails Start with ErrNotSupported (reported to failed) and the next
// candidate, an in-process driver of lower score, starts instead; a nub the
// masks exclude is not tried.
func TestEntryMatchesButDoesNotStart(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := bundle.Load(bundleDir(t, good, 0o755), opts)
	require.NoError(t, err)

	var mu sync.Mutex
	var failures []error
	e := m.Entry(func() driver.Driver {
		return failing{record: func(err error) { mu.Lock(); failures = append(failures, err); mu.Unlock() }}
	})
	require.Equal(t, drivertable.Bundle, e.Origin)
	require.Equal(t, m.Path, e.Source)
	tbl, err := drivertable.New(e)
	require.NoError(t, err)
	got, err := tbl.Lookup("ftdi-serial")
	require.NoError(t, err)
	ps, err := got.Defaults(drivertable.NewResources())
	require.NoError(t, err)
	require.Len(t, ps, 2)
	_, err = got.ParseMatch("vid", "1")
	require.ErrorIs(t, err, drivertable.ErrBadMatch, "a bundle takes no --personality")

	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	rec := lifecycletest.Record(t, r)
	for _, p := range ps {
		require.NoError(t, r.RegisterPersonality(p))
	}
	require.NoError(t, r.RegisterPersonality(driver.Personality{Name: "fallback", Class: "Fallback", ProviderClass: "USBInterface",
		Match: []driver.Match{driver.MatchValue("idVendor", 0x0403)}, Score: 1, New: func() driver.Driver { return inproc{} }}))

	ft232 := r.NewNub("USBInterface", "1-1:1.0", driver.NewProperties(map[string]any{"idVendor": 0x0403, "idProduct": 0x6001}))
	require.NoError(t, r.Publish(nil, ft232))
	other := r.NewNub("USBInterface", "1-2:1.0", driver.NewProperties(map[string]any{"idVendor": 0x0403, "idProduct": 0x7001}))
	require.NoError(t, r.Publish(nil, other))
	require.NoError(t, r.WaitQuiet(ctx))

	for _, nub := range []*driver.Service{ft232, other} {
		cl := nub.Clients()
		require.Len(t, cl, 1, nub.String())
		require.Equal(t, "Fallback", cl[0].Class())
	}
	mu.Lock()
	require.Len(t, failures, 1, "tried on the FT232 only: the mask excludes 0x7001")
	require.ErrorIs(t, failures[0], bundle.ErrNotSupported)
	mu.Unlock()
	var starts []string
	for _, ev := range rec.Events() {
		if ev.Step == driver.StepStart && ev.Err != "" {
			require.Contains(t, ev.Err, bundle.ErrNotSupported.Error())
			starts = append(starts, ev.Name)
		}
	}
	require.Equal(t, []string{"ftdi-serial"}, starts)

	require.NoError(t, r.Close(ctx))
	rec.Check(t)
}

// TestPropsAgree: the properties a manifest's keys compare are the ones the
// nubs carry, as the sample drivers name them.
func TestPropsAgree(t *testing.T) {
	for _, tt := range []struct {
		class, text, prop string
	}{
		{usbstorage.NubClass, "vid = 1", "idVendor"},
		{usbstorage.NubClass, "class = 1", usbstorage.PropInterfaceClass},
		{usbstorage.NubClass, "subclass = 1", usbstorage.PropInterfaceSubClass},
		{usbstorage.NubClass, "protocol = 1", usbstorage.PropInterfaceProtocol},
		{usbstorage.NubClass, "interface = 1", usbstorage.PropInterfaceNumber},
		{sg.NubClass, "type = 1", sg.PropType},
		{sg.NubClass, `vendor = "x"`, "vendor"},
		{sg.NubClass, `model = "x"`, "model"},
		{hidkbd.NubClass, "usage_page = 1", hidkbd.PropUsagePage},
		{hidkbd.NubClass, "usage = 1", hidkbd.PropUsage},
	} {
		text := strings.Replace(good, `provider_class = "HIDDevice"`, `provider_class = "`+tt.class+`"`, 1)
		text = strings.Replace(text, "match.usage_page = 0x01\nmatch.usage      = 0x06", "match."+tt.text, 1)
		m, err := bundle.Load(bundleDir(t, text, 0o755), opts)
		require.NoError(t, err, tt.text)
		require.Equal(t, tt.prop, m.Personalities[1].Match[0].Prop, tt.text)
	}
	require.Equal(t, bundle.ClassUSBInterface, usbstorage.NubClass)
	require.Equal(t, bundle.ClassSCSIDevice, sg.NubClass)
	require.Equal(t, bundle.ClassHIDDevice, hidkbd.NubClass)
}

// FuzzParse: any input is a manifest or an error naming the file; never a
// panic, never both.
func FuzzParse(f *testing.F) {
	entries, err := os.ReadDir("testdata")
	require.NoError(f, err)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".toml") {
			b, err := os.ReadFile("testdata/" + e.Name())
			require.NoError(f, err)
			f.Add(b)
		}
	}
	f.Add([]byte(good))
	exe, err := os.Executable() // a real executable for the manifests that name it
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, data []byte) {
		text := strings.ReplaceAll(string(data), "@EXE@", exe)
		m, err := bundle.Parse("/fuzz/manifest.toml", []byte(text), opts)
		if err != nil {
			require.Nil(t, m)
			require.True(t, strings.HasPrefix(err.Error(), "load /fuzz/manifest.toml"), err.Error())
			return
		}
		require.NotEmpty(t, m.Name)
		require.NotEmpty(t, m.Personalities)
		for _, p := range m.Personalities {
			require.NotEmpty(t, p.Match)
		}
		e := m.Entry(nil)
		ps, err := e.Defaults(drivertable.NewResources())
		require.NoError(t, err)
		require.Len(t, ps, len(m.Personalities))
	})
}

// TestSeeds: the fuzz seeds say what they mean to (good ones load).
func TestSeeds(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	for name, ok := range map[string]bool{"ftdi.toml": true, "hid.toml": true, "bad.toml": false} {
		b, err := os.ReadFile("testdata/" + name)
		require.NoError(t, err)
		_, err = bundle.Parse("/seed/"+name, []byte(strings.ReplaceAll(string(b), "@EXE@", exe)), opts)
		require.Equal(t, ok, err == nil, "%s: %v", name, err)
	}
}
