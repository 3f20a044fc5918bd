package bundlehost

import (
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStrays: a driver process left running, a zombie nobody reaped, and
// a process of a driver's group are each reported; once reaped, nothing.
func TestStrays(t *testing.T) {
	start := func(t *testing.T) *exec.Cmd {
		cmd := exec.Command("sleep", "30")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	driver := start(t)
	pid := driver.Process.Pid
	ps := strays([]int{pid}, 0)
	require.Len(t, ps, 1)
	require.Equal(t, "process", ps[0].Kind)
	require.Equal(t, "driver process "+strconv.Itoa(pid)+" is still running", ps[0].Text)

	// A process in the driver's group (what it forked).
	child := exec.Command("sleep", "30")
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pid}
	require.NoError(t, child.Start())
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	ps = strays([]int{pid}, 0)
	require.Len(t, ps, 1)
	require.Contains(t, ps[0].Text, "process "+strconv.Itoa(child.Process.Pid)+" (sleep) of driver process "+strconv.Itoa(pid)+"'s group is still running")

	// Killed but not reaped: a zombie.
	require.NoError(t, syscall.Kill(-pid, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		ps = strays([]int{pid}, 0)
		return len(ps) == 1 && ps[0].Text == "driver process "+strconv.Itoa(pid)+" is a zombie (never reaped); process "+
			strconv.Itoa(child.Process.Pid)+" (sleep) of driver process "+strconv.Itoa(pid)+"'s group is a zombie"
	}, 5*time.Second, time.Millisecond, "%v", ps)
	_ = driver.Wait()
	_ = child.Wait()
	require.Empty(t, strays([]int{pid}, time.Second))
}
