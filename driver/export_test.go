package driver

// SetAnnounceHook makes f run between a service's unlisting and the
// announcement of its free; the returned function removes it.
func SetAnnounceHook(f func(*Service)) (restore func()) {
	testAnnounceHook.Store(&f)
	return func() { testAnnounceHook.Store(nil) }
}
