//go:build !linux

package main

import "errors"

func watchDir(*reporter, string) error { return errors.New("-watch-dir needs Linux (inotify)") }
