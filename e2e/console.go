//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
)

// Console collects the guest's serial console line by line, copies it to a
// log, and lets tests wait for a line.
type Console struct {
	mu      sync.Mutex
	log     io.Writer
	partial []byte
	lines   []string
	changed chan struct{}
	closed  bool
}

func newConsole(log io.Writer) *Console {
	return &Console{log: log, changed: make(chan struct{})}
}

// Write implements io.Writer for QEMU's stdout.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.log != nil {
		c.log.Write(p)
	}
	c.partial = append(c.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.lines = append(c.lines, strings.TrimRight(string(c.partial[:i]), "\r"))
		c.partial = c.partial[i+1:]
		added = true
	}
	if added {
		c.notify()
	}
	return len(p), nil
}

func (c *Console) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// close marks the end of output (QEMU exited): waits stop blocking.
func (c *Console) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.lines = append(c.lines, string(c.partial))
		c.partial = nil
	}
	c.closed = true
	c.notify()
}

// Mark returns the number of lines so far.
func (c *Console) Mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// Lines returns the lines after mark.
func (c *Console) Lines(mark int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if mark > len(c.lines) {
		return nil
	}
	return append([]string(nil), c.lines[mark:]...)
}

// Tail returns the last n lines.
func (c *Console) Tail(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := max(len(c.lines)-n, 0)
	return append([]string(nil), c.lines[i:]...)
}

// WaitLine waits for the first line after mark that matches re and returns
// it with its submatches.
func (c *Console) WaitLine(ctx context.Context, mark int, re *regexp.Regexp) ([]string, error) {
	for {
		c.mu.Lock()
		for i := mark; i < len(c.lines); i++ {
			if m := re.FindStringSubmatch(c.lines[i]); m != nil {
				c.mu.Unlock()
				return m, nil
			}
		}
		mark = max(mark, len(c.lines))
		closed, changed := c.closed, c.changed
		c.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("e2e: console: no line matching %q before the guest stopped", re)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("e2e: console: waiting for %q: %w", re, ctx.Err())
		}
	}
}
