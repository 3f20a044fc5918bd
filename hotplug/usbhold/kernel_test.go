package usbhold

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug"
)

// fakeKernel follows the kernel's rules for interface authorization
// (drivers/usb/core): an interface is created with its root hub's
// interface_authorized_default; the driver that wants it binds at once if
// it is authorized; authorizing does not probe; a probe binds only an
// authorized, unbound interface.
type fakeKernel struct {
	authErr error // Authorize fails with it (an interface that vanished under the write)
	mu      sync.Mutex
	hubs    map[string]bool // root hub → interface_authorized_default
	ifaces  map[string]*fakeIface
	// devices: a device's driver, "usb" once the kernel has configured it
	// (bound the generic driver after probing every interface).
	devices map[string]string
	log     []string // "bind 2-1:1.0 usb-storage", "probe …", "authorize …", "gate usb2 0"
}

type fakeIface struct {
	authorized bool
	driver     string
	wants      string // the kernel driver whose id table matches it
	dev        Held
	class      [3]uint8
}

var _ kernel = (*fakeKernel)(nil)

func newFakeKernel(hubs ...string) *fakeKernel {
	k := &fakeKernel{hubs: map[string]bool{}, ifaces: map[string]*fakeIface{}, devices: map[string]string{}}
	for _, h := range hubs {
		k.hubs[h] = true
	}
	return k
}

func (k *fakeKernel) logf(format string, args ...any) {
	k.log = append(k.log, fmt.Sprintf(format, args...))
}

// plug creates an interface as usb_set_configuration does and returns
// its add uevent.
func (k *fakeKernel) plug(t *testing.T, name string, bus, addr int, vid, pid uint16, class [3]uint8, wants string) hotplug.Event {
	t.Helper()
	k.mu.Lock()
	b, dev, ok := interfaceBus(name)
	require.True(t, ok, name)
	require.Equal(t, bus, b)
	f := &fakeIface{authorized: k.hubs[rootHub(bus)], wants: wants, class: class,
		dev: Held{Interface: name, Bus: bus, Address: addr, Vendor: vid, Product: pid}}
	k.ifaces[name] = f
	if f.authorized {
		f.driver = wants
		k.logf("bind %s %s", name, wants)
	}
	k.devices[dev] = "usb"
	k.mu.Unlock()
	cfgIf := name[strings.IndexByte(name, ':')+1:]
	ev, err := hotplug.NewEvent(hotplug.ActionAdd, "/devices/pci0000:00/0000:00:04.0/"+rootHub(bus)+"/"+dev+"/"+name, "usb", 0,
		"DEVTYPE=usb_interface", fmt.Sprintf("PRODUCT=%x/%x/0", vid, pid), "TYPE=0/0/0",
		fmt.Sprintf("INTERFACE=%d/%d/%d", class[0], class[1], class[2]),
		fmt.Sprintf("MODALIAS=usb:v%04Xp%04Xd0000dc00dsc00dp00ic%02Xisc%02Xip%02Xin%s", vid, pid, class[0], class[1], class[2], strings.Split(cfgIf, ".")[1]))
	require.NoError(t, err)
	return ev
}

// unplug removes an interface and returns its remove uevent.
func (k *fakeKernel) unplug(t *testing.T, name string) hotplug.Event {
	t.Helper()
	b, dev, _ := interfaceBus(name)
	k.mu.Lock()
	delete(k.ifaces, name)
	delete(k.devices, dev)
	k.mu.Unlock()
	ev, err := hotplug.NewEvent(hotplug.ActionRemove, "/devices/pci0000:00/0000:00:04.0/"+rootHub(b)+"/"+dev+"/"+name, "usb", 0, "DEVTYPE=usb_interface", "INTERFACE=8/6/80")
	require.NoError(t, err)
	return ev
}

// claim is a usbfs claim: refused on an unauthorized or bound interface.
func (k *fakeKernel) claim(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	f := k.ifaces[name]
	switch {
	case f == nil || !f.authorized:
		return fmt.Errorf("claim %s: %w", name, os.ErrNotExist) // ENODEV
	case f.driver != "":
		return fmt.Errorf("claim %s: busy (%s)", name, f.driver)
	}
	f.driver = "usbfs"
	return nil
}

// release drops a usbfs claim; the kernel binds nothing by itself.
func (k *fakeKernel) release(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if f := k.ifaces[name]; f != nil && f.driver == "usbfs" {
		f.driver = ""
	}
}

func (k *fakeKernel) state(name string) (authorized bool, driver string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f := k.ifaces[name]
	if f == nil {
		return false, "<gone>"
	}
	return f.authorized, f.driver
}

func (k *fakeKernel) hubDefault(hub string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.hubs[hub]
}

func (k *fakeKernel) RootHubs() ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for h := range k.hubs {
		out = append(out, h)
	}
	sort.Strings(out)
	return out, nil
}

func (k *fakeKernel) AuthorizedDefault(hub string) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.hubs[hub]
	if !ok {
		return false, os.ErrNotExist
	}
	return v, nil
}

func (k *fakeKernel) SetAuthorizedDefault(hub string, on bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.hubs[hub]; !ok {
		return os.ErrNotExist
	}
	k.hubs[hub] = on
	k.logf("gate %s %v", hub, !on)
	return nil
}

func (k *fakeKernel) Interfaces(bus int) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for n := range k.ifaces {
		if b, _, _ := interfaceBus(n); b == bus {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (k *fakeKernel) iface(name string) (*fakeIface, error) {
	f := k.ifaces[name]
	if f == nil {
		return nil, os.ErrNotExist
	}
	return f, nil
}

func (k *fakeKernel) Authorized(name string) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f, err := k.iface(name)
	if err != nil {
		return false, err
	}
	return f.authorized, nil
}

func (k *fakeKernel) Authorize(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.authErr != nil {
		return k.authErr
	}
	f, err := k.iface(name)
	if err != nil {
		return err
	}
	f.authorized = true // no probe: the kernel's documented behaviour
	k.logf("authorize %s", name)
	return nil
}

func (k *fakeKernel) Probe(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	f, err := k.iface(name)
	if err != nil {
		return err
	}
	k.logf("probe %s", name)
	if f.authorized && f.driver == "" && f.wants != "" {
		f.driver = f.wants
		k.logf("bind %s %s", name, f.wants)
	}
	return nil
}

func (k *fakeKernel) Driver(name string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if d, ok := k.devices[name]; ok {
		return d, nil
	}
	f, err := k.iface(name)
	if err != nil {
		return "", err
	}
	return f.driver, nil
}

func (k *fakeKernel) Device(name string) (Held, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f, err := k.iface(name)
	if err != nil {
		return Held{}, err
	}
	return f.dev, nil
}

// binds lists the "bind" lines of the log.
func (k *fakeKernel) binds() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(k.log), func(s string) bool { return !strings.HasPrefix(s, "bind ") })
}
