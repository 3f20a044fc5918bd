// Package statefile reads and writes the small files a root daemon keeps
// between runs (the journal of detached kernel drivers, the simulator's
// kernel state) without trusting the file system around them: the
// directory must belong to the daemon's user and not be writable by
// others, files are opened relative to a directory descriptor with
// O_NOFOLLOW (a planted symlink is an error, never followed), a
// replacement is written to a new file created with O_EXCL, fsynced,
// renamed over the old one and the directory fsynced, and only regular
// files are read (a FIFO does not hang start-up).
package statefile
