//go:build unix

package statefile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// MaxSize bounds what ReadFile reads: state files are small, and a huge
// one is not ours.
const MaxSize = 16 << 20

// Errors of CheckDir and ReadFile.
var (
	ErrUnsafeDir  = errors.New("unsafe state directory")
	ErrNotRegular = errors.New("not a regular file")
)

// CheckDir creates dir (mode 0700) if it is missing and refuses it unless
// it is a directory, not a symlink, owned by the effective user and not
// writable by group or others: anyone who can write there could swap the
// daemon's state.
func CheckDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("%w: %s is not a directory (a symlink?)", ErrUnsafeDir, dir)
		}
		return fmt.Errorf("%s: %w", dir, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if uid := uint32(os.Geteuid()); st.Uid != uid {
		return fmt.Errorf("%w: %s is owned by uid %d, not the daemon's uid %d", ErrUnsafeDir, dir, st.Uid, uid)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("%w: %s has mode %#o: writable by group or others", ErrUnsafeDir, dir, st.Mode&0o777)
	}
	return nil
}

func openDir(dir string) (int, error) {
	return unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// ReadFile reads path, which must be a regular file and not a symlink; a
// missing file is an error matching os.ErrNotExist.
func ReadFile(path string) ([]byte, error) {
	dfd, err := openDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	// O_NONBLOCK: opening a FIFO for reading does not wait for a writer.
	fd, err := unix.Openat(dfd, filepath.Base(path), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, os.ErrNotExist
		}
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symlink", ErrNotRegular, path)
		}
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is a %s", ErrNotRegular, path, typeName(fi.Mode()))
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxSize)
	}
	return b, nil
}

// WriteFile replaces path with data (mode 0600) atomically and durably: a
// new file created with O_EXCL|O_NOFOLLOW beside it, fsynced, renamed over
// path, and the directory fsynced. A crash leaves the old or the new
// contents, never a mix, and a planted file or symlink at the temporary
// name is an error, never written through.
func WriteFile(path string, data []byte) (err error) {
	dfd, err := openDir(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	name := filepath.Base(path)
	tmp := "." + name + ".tmp." + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", tmp, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	defer func() {
		if err != nil {
			unix.Unlinkat(dfd, tmp, 0)
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		return err
	}
	return unix.Fsync(dfd)
}

func typeName(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	case m.IsDir():
		return "directory"
	}
	return m.Type().String()
}
