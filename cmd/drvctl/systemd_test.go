package main

import (
	"bufio"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// unitFile reads the shipped unit's [Service] settings (key → values).
func unitFile(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("systemd/drvkit.service")
	require.NoError(t, err)
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, "unit line %q", line)
		out[k] = append(out[k], v)
	}
	require.NoError(t, sc.Err())
	return out
}

// The shipped unit must keep what the daemon needs across a crash: its
// ExecStart parses with serve's own flags, and the state directory is one
// systemd keeps when the service stops (the runtime directory is deleted
// at every stop unless preserved — which threw the journal away exactly
// when a restarted daemon needed it).
func TestSystemdUnit(t *testing.T) {
	u := unitFile(t)
	require.Len(t, u["ExecStart"], 1)
	args := strings.Fields(u["ExecStart"][0])
	require.Equal(t, "serve", args[1])
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	setupServe(fs, &env{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }})
	pos, err := parseInterspersed(fs, args[2:])
	require.NoError(t, err, "ExecStart flags")
	require.Empty(t, pos)
	state := fs.Lookup("state-dir").Value.String()
	require.NotEmpty(t, state, "a unit without --state-dir cannot repair a crash")
	switch {
	case strings.HasPrefix(state, "/run/"):
		require.Equal(t, []string{"yes"}, u["RuntimeDirectoryPreserve"],
			"--state-dir %s is under /run: RuntimeDirectoryPreserve=yes must keep it across stops", state)
		require.Contains(t, u["RuntimeDirectory"], strings.Split(strings.TrimPrefix(state, "/run/"), "/")[0])
	case strings.HasPrefix(state, "/var/lib/"):
		require.Contains(t, u["StateDirectory"], strings.Split(strings.TrimPrefix(state, "/var/lib/"), "/")[0])
	default:
		t.Fatalf("--state-dir %s: neither a RuntimeDirectory nor a StateDirectory", state)
	}
	require.NotEqual(t, filepath.Dir(fs.Lookup("socket").Value.String()), state,
		"the socket and the journal do not share a directory")

	// After any exit, the USB hold's gates are lifted from the same state.
	require.Len(t, u["ExecStopPost"], 1)
	post := strings.Fields(u["ExecStopPost"][0])
	require.Equal(t, args[0], post[0], "the same drvctl")
	require.Equal(t, "unhold", post[1])
	ufs := flag.NewFlagSet("unhold", flag.ContinueOnError)
	ufs.SetOutput(io.Discard)
	setupUnhold(ufs, &env{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }})
	pos, err = parseInterspersed(ufs, post[2:])
	require.NoError(t, err, "ExecStopPost flags")
	require.Empty(t, pos)
	require.Equal(t, state, ufs.Lookup("state-dir").Value.String(), "unhold reads the state serve wrote")

	// The tools' own checks, where the machine has them.
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		dir := t.TempDir()
		b, err := os.ReadFile("systemd/drvkit.service")
		require.NoError(t, err)
		// verify wants the Exec binaries to exist.
		unit := strings.ReplaceAll(string(b), "/usr/local/bin/drvctl", "/bin/true")
		require.NoError(t, os.WriteFile(filepath.Join(dir, "drvkit.service"), []byte(unit), 0o644))
		out, err := exec.Command("systemd-analyze", "verify", filepath.Join(dir, "drvkit.service")).CombinedOutput()
		require.NoError(t, err, "systemd-analyze verify: %s", out)
		require.NotContains(t, string(out), "drvkit.service:", "warnings about the unit: %s", out)
	}
	if _, err := exec.LookPath("systemd-sysusers"); err == nil {
		abs, err := filepath.Abs("systemd/drvkit-sysusers.conf")
		require.NoError(t, err)
		out, err := exec.Command("systemd-sysusers", "--dry-run", abs).CombinedOutput()
		require.NoError(t, err, "systemd-sysusers: %s", out)
		require.NotContains(t, string(out), "ignoring", "systemd-sysusers: %s", out)
	}
	require.Equal(t, []string{"drvkit"}, u["Group"])
	require.Equal(t, []string{"notify"}, u["Type"], "READY=1 once coldplug is done")
	require.Len(t, u["WatchdogSec"], 1)
	b, err := os.ReadFile("systemd/drvkit-sysusers.conf")
	require.NoError(t, err)
	require.Contains(t, string(b), "g drvkit -", "the unit's group is created by the sysusers entry")
}

// The unit confines the daemon: only the capabilities it needs (the
// comment in the unit says why each), a system-service syscall filter
// (and io_uring's two calls, for fan-outs), an
// owner-only umask, resource bounds; and systemd's own assessment, where
// the machine has systemd-analyze, rates it OK (2.5 with systemd 252).
func TestSystemdUnitHardening(t *testing.T) {
	u := unitFile(t)
	require.Equal(t, []string{"CAP_SYS_RAWIO CAP_NET_ADMIN CAP_CHOWN"}, u["CapabilityBoundingSet"])
	require.Equal(t, []string{"@system-service", "io_uring_setup io_uring_enter"}, u["SystemCallFilter"])
	require.Equal(t, []string{"0077"}, u["UMask"])
	for _, k := range []string{"LimitNOFILE", "TasksMax", "MemoryMax"} {
		require.Len(t, u[k], 1, k)
	}
	require.Equal(t, []string{"closed"}, u["DevicePolicy"])
	require.NotContains(t, u, "ProtectKernelTunables", "re-attaching a kernel driver writes sysfs")
	require.NotContains(t, u, "PrivateNetwork", "uevents live in the host's network namespace")
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("no systemd-analyze")
	}
	dir := t.TempDir()
	b, err := os.ReadFile("systemd/drvkit.service")
	require.NoError(t, err)
	unit := strings.ReplaceAll(string(b), "/usr/local/bin/drvctl", "/bin/true")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "drvkit.service"), []byte(unit), 0o644))
	out, err := exec.Command("systemd-analyze", "security", "--offline=yes", filepath.Join(dir, "drvkit.service")).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Overall exposure level") {
		t.Skipf("systemd-analyze security --offline unsupported: %s", out)
	}
	m := regexp.MustCompile(`Overall exposure level for drvkit.service: ([0-9.]+)`).FindSubmatch(out)
	require.NotNil(t, m, "%s", out)
	score, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	t.Logf("systemd-analyze security: %.1f", score)
	require.LessOrEqual(t, score, 3.0, "the unit lost some of its confinement: %s", out)
}

// make install DESTDIR=… PREFIX=/usr puts the trimmed binary, the unit
// (pointing at it), the sysusers entry, completions and man pages where
// systemd and the shells look, and the installed unit verifies.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds drvctl")
	}
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Skip("no make")
	}
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	dest := t.TempDir()
	out, err := exec.Command(mk, "-C", root, "install", "DESTDIR="+dest, "PREFIX=/usr").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, f := range []string{"usr/bin/drvctl", "usr/lib/systemd/system/drvkit.service", "usr/lib/sysusers.d/drvkit.conf",
		"usr/share/bash-completion/completions/drvctl", "usr/share/zsh/site-functions/_drvctl",
		"usr/share/fish/vendor_completions.d/drvctl.fish", "usr/share/man/man1/drvctl.1", "usr/share/man/man1/drvctl-inspect.1"} {
		_, err := os.Stat(filepath.Join(dest, f))
		require.NoError(t, err, f)
	}
	bin, err := os.ReadFile(filepath.Join(dest, "usr/bin/drvctl"))
	require.NoError(t, err)
	require.NotContains(t, string(bin), root+"/", "-trimpath: no build directory in the binary")
	unit, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/drvkit.service"))
	require.NoError(t, err)
	require.Contains(t, string(unit), "ExecStart=/usr/bin/drvctl serve ")
	require.Contains(t, string(unit), "Type=notify")
	vout, err := exec.Command(filepath.Join(dest, "usr/bin/drvctl"), "--version").CombinedOutput()
	require.NoError(t, err, "%s", vout)
	require.True(t, strings.HasPrefix(string(vout), "drvctl "), "%s", vout)
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		// verify wants the ExecStart binary where the unit says.
		u := strings.ReplaceAll(string(unit), "/usr/bin/drvctl", filepath.Join(dest, "usr/bin/drvctl"))
		p := filepath.Join(t.TempDir(), "drvkit.service")
		require.NoError(t, os.WriteFile(p, []byte(u), 0o644))
		out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput()
		require.NoError(t, err, "systemd-analyze verify: %s", out)
		require.NotContains(t, string(out), "drvkit.service:", "warnings about the unit: %s", out)
	}
}
