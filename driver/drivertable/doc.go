// Package drivertable is the table of drivers a daemon can load by name:
// what `drvctl serve --drivers` and `--personality … driver=NAME` look up.
//
// An [Entry] says, for one driver, what the daemon must wire for it (the
// [Resources] it needs, such as the USB backend or the opener of sg nodes),
// its default personalities, and the match keys a custom personality of it
// may use. Drivers register an entry; the daemon wires what the entries
// need and never switches on driver names:
//
//	tbl, err := drivertable.New(usbstorage.Entry, sg.Entry)
//	res := drivertable.NewResources()
//	drivertable.Provide(res, usb.BackendKey, func() (usb.Backend, error) { return backend, nil })
//	e, err := tbl.Lookup("usbstorage")
//	ps, err := e.Defaults(res)
//
// A resource is provided under a typed [Key], declared by the package that
// owns its type (usb.BackendKey, sg.OpenerKey), so a driver gets a value of
// the right type or a clear error, and drivertable imports nothing but
// driver.
//
// A [Builtin] entry's personalities construct instances in the daemon's
// process. A driver bundle (a manifest and an executable run in its own
// process, package driver/bundle) is an entry of [Origin] [Bundle] whose
// personalities come from its manifest and whose constructor is the proxy
// to that process (package driver/host), looked up and wired the same way; [Table.Remove]
// takes it out again when it is unloaded.
package drivertable
