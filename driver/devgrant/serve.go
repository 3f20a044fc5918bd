package devgrant

// serveDevice serves a device opened by the daemon over a new socket pair:
// the File to hand to the driver, and the release that stops the server
// and closes the device (closeDev).
func serveDevice(resource, node, kind string, h handler, codes codeTable, closeDev func() error) (File, func() error, error) {
	conn, f, err := socketPair(kind + ":" + node)
	if err != nil {
		_ = closeDev()
		return File{}, nil, err
	}
	s := startServer(conn, h, codes)
	return File{Resource: resource, Node: node, Kind: kind, File: f}, func() error { return s.stop(closeDev) }, nil
}
