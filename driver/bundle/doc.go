// Package bundle reads driver bundles: a manifest that declares a driver
// made by someone else — its name and version, the personalities it
// matches, the executable that runs it and as whom, its restart policy, who
// may open it and the client methods it offers — and turns it into an
// entry of the driver table ([drivertable.Entry] of origin
// [drivertable.Bundle]).
//
// A bundle is a directory holding manifest.toml and the driver's
// executable, or a manifest file alone whose executable path is absolute
// or relative to the manifest's directory:
//
//	name    = "ftdi-serial"
//	version = "1.0.0"
//
//	[run]
//	executable = "ftdi-serial"
//	args       = ["--quiet"]
//	user       = "drvkit-ftdi"
//
//	[[personality]]
//	provider_class = "USBInterface"
//	score          = 100
//	[personality.match]
//	vid   = 0x0403
//	pid   = { value = 0x6000, mask = 0xff00 }
//
// The manifest is TOML: operators write it by hand, so it takes comments
// and hex integers (USB ids are hex everywhere), which JSON does not;
// github.com/BurntSushi/toml is maintained, has no dependencies, reports
// the line of a syntax error and lists the keys it did not decode, so an
// unknown or misspelt key is refused rather than ignored.
//
// A manifest is refused whole — nothing of it is loaded — with the file,
// the line and the field at fault ([Error]): a syntax error, an unknown key,
// a missing or ill-typed field, a match key its provider class does not
// have, an executable that is missing, not a regular file, not executable
// or writable by everyone (or in a directory that is, without the sticky
// bit), a user or group that does not exist or is root
// (unless [Options.AllowRoot]), a name of a built-in driver.
//
// An entry made by [Manifest.Entry] registers the bundle's personalities;
// the constructor it is given makes the driver of an instance — the proxy
// of package driver/host, which runs the driver in a process of its own.
// Without one, an instance that wins fails Start with [ErrNotSupported],
// and matching falls through to the next candidate.
package bundle
