//go:build !unix

package hotplug

import "io/fs"

func inode(fs.FileInfo) uint64 { return 0 }
