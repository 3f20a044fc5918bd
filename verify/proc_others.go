//go:build !linux

package verify

import "os"

// openFDs: descriptors are only counted on Linux (/proc/self/fd).
func openFDs() map[string]string { return map[string]string{} }

// childPIDs: children are only listed on Linux (/proc/self/task/*/children).
func childPIDs() map[int]bool { return map[int]bool{} }

func removeAll(dir string) error { return os.RemoveAll(dir) }
