//go:build unix

package statefile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWriteAndRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	_, err := ReadFile(p)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, WriteFile(p, []byte("one")))
	require.NoError(t, WriteFile(p, []byte("two")))
	b, err := ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "two", string(b))
	fi, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temporary file is left")
}

// A symlink planted at the file is replaced, never written through; one
// planted at the file's place for reading is refused.
func TestSymlinksAreNeverFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	require.NoError(t, os.WriteFile(victim, []byte("precious"), 0o644))
	p := filepath.Join(dir, "state.json")
	require.NoError(t, os.Symlink(victim, p))
	_, err := ReadFile(p)
	require.ErrorIs(t, err, ErrNotRegular)
	require.NoError(t, WriteFile(p, []byte("new")))
	b, err := os.ReadFile(victim)
	require.NoError(t, err)
	require.Equal(t, "precious", string(b), "the symlink's target was written")
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular())
	// A symlinked directory is refused too.
	link := filepath.Join(t.TempDir(), "dirlink")
	require.NoError(t, os.Symlink(dir, link))
	require.Error(t, WriteFile(filepath.Join(link, "x"), nil))
	require.ErrorIs(t, CheckDir(link), ErrUnsafeDir)
}

// A FIFO where the journal should be is refused at once instead of hanging.
func TestFIFOIsRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "journal")
	require.NoError(t, syscall.Mkfifo(p, 0o600))
	done := make(chan error, 1)
	go func() { _, err := ReadFile(p); done <- err }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrNotRegular)
		require.ErrorContains(t, err, "named pipe")
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO hung")
	}
}

func TestCheckDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, CheckDir(dir), "created")
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	require.NoError(t, os.Chmod(dir, 0o777))
	require.ErrorIs(t, CheckDir(dir), ErrUnsafeDir)
	require.ErrorContains(t, CheckDir(dir), "writable by group or others")
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, CheckDir(dir))
	if os.Geteuid() == 0 {
		require.NoError(t, os.Chown(dir, 65534, 65534))
		require.ErrorContains(t, CheckDir(dir), "owned by uid 65534")
	}
}
