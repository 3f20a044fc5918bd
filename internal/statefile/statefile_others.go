//go:build !unix

package statefile

import (
	"errors"
	"os"
)

// MaxSize bounds what ReadFile reads.
const MaxSize = 16 << 20

// Errors of CheckDir and ReadFile.
var (
	ErrUnsafeDir  = errors.New("unsafe state directory")
	ErrNotRegular = errors.New("not a regular file")
)

// CheckDir creates dir; ownership is not checked off Unix.
func CheckDir(dir string) error { return os.MkdirAll(dir, 0o700) }

// ReadFile reads path.
func ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

// WriteFile replaces path with data.
func WriteFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
