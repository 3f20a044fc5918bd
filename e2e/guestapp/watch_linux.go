package main

import (
	"bytes"
	"fmt"

	"unsafe"

	"golang.org/x/sys/unix"
)

// watchDir reports every entry created in dir ("created", Data: the name)
// until the process is killed: how the host sees a /dev/sdX node that
// exists only for a moment (inotify queues the creation even if the node
// is gone by the time it is read).
func watchDir(r *reporter, dir string) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE); err != nil {
		return fmt.Errorf("inotify %s: %w", dir, err)
	}
	r.emit(Line{Event: "watching", Data: dir})
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("inotify read: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				r.emit(Line{Event: "overflow"})
			} else if len(name) > 0 {
				r.emit(Line{Event: "created", Data: string(name)})
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}
