package main

import (
	"bytes"
	"flag"
	"net"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func testEnv(vars map[string]string, uid int) (*env, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &env{stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }, uid: uid}, &out, &errb
}

func TestSocketPath(t *testing.T) {
	// A runtime directory with a daemon's socket in it, and one without.
	withDaemon, without := t.TempDir(), t.TempDir()
	l, err := net.Listen("unix", filepath.Join(withDaemon, "drvkit.sock"))
	require.NoError(t, err)
	defer l.Close()
	tests := []struct {
		name string
		flag string
		vars map[string]string
		uid  int
		want string
	}{
		{"flag wins", "/tmp/x.sock", map[string]string{"DRVCTL_SOCKET": "/env.sock"}, 0, "/tmp/x.sock"},
		{"env", "", map[string]string{"DRVCTL_SOCKET": "/env.sock"}, 1000, "/env.sock"},
		{"root default", "", nil, 0, "/run/drvkit/drvkit.sock"},
		{"user's own daemon", "", map[string]string{"XDG_RUNTIME_DIR": withDaemon}, 1000, filepath.Join(withDaemon, "drvkit.sock")},
		// The system daemon, which every local user may read.
		{"user runtime dir without a daemon", "", map[string]string{"XDG_RUNTIME_DIR": without}, 1000, "/run/drvkit/drvkit.sock"},
		// Never a world-writable directory another user could squat in.
		{"user without runtime dir", "", nil, 1000, "/run/drvkit/drvkit.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, _ := testEnv(tt.vars, tt.uid)
			require.Equal(t, tt.want, socketPath(tt.flag, e))
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		want   int
		stderr string
	}{
		{"no command", nil, exitUsage, "usage: drvctl COMMAND"},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"help", []string{"help"}, exitOK, "commands:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, errb := testEnv(nil, 0)
			require.Equal(t, tt.want, run(tt.args, e))
			require.Contains(t, errb.String(), tt.stderr)
		})
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args     []string
		wantPos  []string
		wantSock string
	}{
		{[]string{"12", "--socket", "/s"}, []string{"12"}, "/s"},
		{[]string{"--socket", "/s", "12"}, []string{"12"}, "/s"},
		{[]string{"unplug 2-1", "--socket=/s", "wait 1ms"}, []string{"unplug 2-1", "wait 1ms"}, "/s"},
		{[]string{"--socket", "/s", "--", "-x", "--socket"}, []string{"-x", "--socket"}, "/s"},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		sock := fs.String("socket", "", "")
		pos, err := parseInterspersed(fs, tt.args)
		require.NoError(t, err, tt.args)
		require.Equal(t, tt.wantPos, pos, tt.args)
		require.Equal(t, tt.wantSock, *sock, tt.args)
	}
}
