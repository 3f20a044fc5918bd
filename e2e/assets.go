//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Assets are the files prepare.sh produced.
type Assets struct {
	Cache         string // the cache directory
	KernelPackage string // linux-image-6.1.0-NN-amd64
	KernelVersion string
	Kernel        string // bzImage path
	Initrd        string // initramfs path
	QEMU          string // qemu-system-x86_64 path
	PrepareTime   time.Duration
}

// CacheDir returns $DRVKIT_E2E_CACHE, or .cache/e2e in the repository.
func CacheDir() string {
	if d := os.Getenv("DRVKIT_E2E_CACHE"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), ".cache", "e2e")
}

func repoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	return filepath.Dir(filepath.Dir(file))
}

// Prepare runs prepare.sh (downloads on first use, then only rebuilds the
// guest agent and the initramfs) and reads what it produced. Its progress
// goes to log (nil: discarded; shown in the error when it fails). extraBins
// are host binaries to put into the guest's /bin, with their libraries.
func Prepare(ctx context.Context, log io.Writer, extraBins ...string) (*Assets, error) {
	t0 := time.Now()
	cache := CacheDir()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot(), "e2e", "prepare.sh"))
	cmd.Env = append(os.Environ(), "DRVKIT_E2E_CACHE="+cache, "DRVKIT_E2E_EXTRA_BINS="+strings.Join(extraBins, " "))
	var out bytes.Buffer
	w := io.Writer(&out)
	if log != nil {
		w = io.MultiWriter(&out, log)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("e2e: prepare.sh: %w\n%s", err, out.Bytes())
	}
	a, err := readAssets(cache)
	if err != nil {
		return nil, err
	}
	a.PrepareTime = time.Since(t0)
	return a, nil
}

func readAssets(cache string) (*Assets, error) {
	path := filepath.Join(cache, "current", "env")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("e2e: %w (run e2e/prepare.sh)", err)
	}
	defer f.Close()
	a := &Assets{Cache: cache}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "KERNEL_PACKAGE":
			a.KernelPackage = v
		case "KERNEL_VERSION":
			a.KernelVersion = v
		case "KERNEL":
			a.Kernel = v
		case "INITRD":
			a.Initrd = v
		case "QEMU":
			a.QEMU = v
		}
	}
	if a.Kernel == "" || a.Initrd == "" || a.QEMU == "" {
		return nil, fmt.Errorf("e2e: %s is incomplete", path)
	}
	return a, sc.Err()
}
