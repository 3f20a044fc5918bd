package host_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/host"
	"github.com/drvkit/drvkit/examples/bundles/gocounter/counter"
)

// daemonArg makes the test binary a daemon in miniature: it loads the
// manifest given, plugs a nub, prints its driver's pid and waits to be
// killed.
const daemonArg = "-drvkit.test-daemon"

func testDaemon(manifest string) {
	m, err := bundle.Load(manifest, bundle.Options{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	h := host.New(host.Config{Registry: r})
	ent := h.Entry(m)
	ps, err := ent.Defaults(drivertable.NewResources())
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for _, p := range ps {
		_ = r.RegisterPersonality(p)
	}
	nub := r.NewNub("HIDDevice", "1-1", driver.NewProperties(map[string]any{"idVendor": counter.VendorID, "idProduct": counter.ProductID}))
	_ = r.Publish(nil, nub)
	st, _ := h.Status(m.Name)
	fmt.Println("driver", st.PIDs)
	// Busy elsewhere: the spawning thread must not be the one that dies.
	time.Sleep(time.Hour)
}

// TestDaemonDeathKillsDrivers: when the daemon dies (SIGKILL, no cleanup),
// its driver processes die with it: the parent-death signal, set from the
// spawning thread, fires when the daemon's process goes.
func TestDaemonDeathKillsDrivers(t *testing.T) {
	e := newEnv(t)
	// A driver that no longer reads its socket: only the parent-death
	// signal can end it.
	m := e.manifest("deaf", "", "")
	dir := publicDir(t)
	manifest := filepath.Join(dir, "manifest.toml")
	b, err := os.ReadFile(m.Path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(manifest, b, 0o644))

	cmd := exec.Command(testExe, daemonArg, manifest)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(line, "driver ["), line)
	pid, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "driver ["), "]"))
	require.NoError(t, err, line)
	require.False(t, dead(pid))

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.Eventually(t, func() bool { return dead(pid) }, 5*time.Second, 5*time.Millisecond, "the driver outlived its daemon")
	_ = context.Background
	e.finish()
}
