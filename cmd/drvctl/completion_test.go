package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// completionScript writes drvctl completion SHELL into a temporary file.
func completionScript(t *testing.T, shell string) string {
	t.Helper()
	e, out, errb := testEnv(nil, 0)
	require.Equal(t, 0, run([]string{"completion", shell}, e), errb.String())
	path := filepath.Join(t.TempDir(), "drvctl."+shell)
	require.NoError(t, os.WriteFile(path, out.Bytes(), 0o644))
	return path
}

// The bash script parses (bash -n) and completes: commands, flags, a
// flag's fixed values, a command's positional choices.
func TestCompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script := completionScript(t, "bash")
	out, err := exec.Command(bash, "-n", script).CombinedOutput()
	require.NoError(t, err, "%s", out)

	complete := func(words ...string) []string {
		t.Helper()
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		prog := `source "$1"; COMP_WORDS=(` + strings.Join(quoted, " ") + `); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _drvctl; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command(bash, "-c", prog, "bash", script).CombinedOutput()
		require.NoError(t, err, "%s", out)
		return strings.Fields(string(out))
	}
	require.Equal(t, []string{"inspect"}, complete("drvctl", "ins"))
	require.Subset(t, complete("drvctl", ""), []string{"inspect", "monitor", "serve", "status", "terminate", "unload", "version", "--version"})
	require.Equal(t, []string{"text", "json", "dot"}, complete("drvctl", "inspect", "-o", ""))
	require.Equal(t, []string{"json"}, complete("drvctl", "status", "-o", "j"))
	require.Subset(t, complete("drvctl", "inspect", "-"), []string{"-c", "-n", "-d", "-p", "--property", "--pretty", "-l", "--socket"})
	require.Equal(t, []string{"--kind"}, complete("drvctl", "monitor", "--ki"))
	require.Equal(t, []string{"bash", "zsh", "fish"}, complete("drvctl", "completion", ""))
	require.Equal(t, []string{"--read-any-user", "--read-gids", "--read-uids"}, complete("drvctl", "serve", "--read-"))
}

// The zsh and fish scripts name every command and flag; they parse where
// the shell is installed.
func TestCompletionZshFish(t *testing.T) {
	for _, shell := range []string{"zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			script := completionScript(t, shell)
			b, err := os.ReadFile(script)
			require.NoError(t, err)
			for _, c := range commandTable() {
				require.Contains(t, string(b), c.name)
				for _, f := range c.flags {
					require.Contains(t, string(b), f.name, "%s %s", c.name, f.name)
				}
			}
			sh, err := exec.LookPath(shell)
			if err != nil {
				t.Skipf("%s is not installed: only the content is checked", shell)
			}
			out, err := exec.Command(sh, "-n", script).CombinedOutput()
			require.NoError(t, err, "%s", out)
		})
	}
	code, stderr := runCLI("completion", "tcsh")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, `unknown shell "tcsh" (want bash, zsh or fish)`)
}

// drvctl man writes a page per command and one for drvctl, which groff
// reads without a warning; drvctl-inspect.1 is a golden file.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	e, _, errb := testEnv(nil, 0)
	require.Equal(t, 0, run([]string{"man", dir}, e), errb.String())
	pages := []string{"drvctl.1"}
	for _, c := range commandTable() {
		pages = append(pages, "drvctl-"+c.name+".1")
	}
	for _, p := range pages {
		b, err := os.ReadFile(filepath.Join(dir, p))
		require.NoError(t, err, p)
		require.True(t, strings.HasPrefix(string(b), ".TH DRVCTL"), p)
	}
	b, err := os.ReadFile(filepath.Join(dir, "drvctl-inspect.1"))
	require.NoError(t, err)
	golden(t, "drvctl-inspect.1", b)
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff not installed: the pages were not rendered")
	}
	for _, p := range pages {
		out, err := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", filepath.Join(dir, p)).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Empty(t, string(out), "groff warns about %s", p)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}, {"-V"}} {
		e, out, errb := testEnv(nil, 0)
		require.Equal(t, 0, run(args, e), errb.String())
		require.Regexp(t, `^drvctl \S+.*, go1\.\d+`, out.String())
	}
	e, out, _ := testEnv(nil, 0)
	require.Equal(t, 0, run([]string{"version", "-o", "json"}, e))
	require.Regexp(t, `^\{"version":"[^"]+".*"go_version":"go1\.\d+[^"]*"\}\n$`, out.String())
}
