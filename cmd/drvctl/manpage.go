package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func init() {
	register(&command{name: "man", args: "DIR", summary: "write the manual pages (drvctl.1 and drvctl-COMMAND.1) into a directory", setup: setupMan})
}

func setupMan(fs *flag.FlagSet, e *env) func([]string) error {
	return func(args []string) error {
		if len(args) != 1 {
			return usagef("want the directory to write the pages into (e.g. /usr/local/share/man/man1)")
		}
		dir := args[0]
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		cmds := commandTable()
		write := func(name string, f func(io.Writer) error) error {
			var b strings.Builder
			if err := f(&b); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644)
		}
		if err := write("drvctl.1", func(w io.Writer) error { return writeManMain(w, cmds) }); err != nil {
			return err
		}
		for _, c := range cmds {
			if err := write("drvctl-"+c.name+".1", func(w io.Writer) error { return writeManCommand(w, c) }); err != nil {
				return err
			}
		}
		return nil
	}
}

// roff escapes text for a man page: backslashes, and a leading dot or
// quote that roff would read as a request.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '—':
			b.WriteString(`\(em`)
		case r == '–':
			b.WriteString(`\(en`)
		case r == '→':
			b.WriteString(`\(->`)
		case r > 127:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

const manDate = "drvkit"

func writeManMain(w io.Writer, cmds []cmdInfo) error {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH DRVCTL 1 \"\" %q \"drvkit manual\"\n", manDate)
	b.WriteString(".SH NAME\ndrvctl \\- drvkit's device driver lifecycle daemon and its command\\-line tool\n")
	b.WriteString(".SH SYNOPSIS\n.B drvctl\n.I command\n[\\fIflags\\fR] [\\fIargs\\fR]\n.br\n.B drvctl \\-\\-version\n")
	b.WriteString(".SH DESCRIPTION\n")
	b.WriteString(roff("drvctl serve runs the drvkit daemon: the registry of devices, drivers and user clients, the hotplug bridge and the user-client socket. Every other command talks to it over that socket.") + "\n")
	b.WriteString(".SH COMMANDS\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, ".TP\n.B drvctl %s", c.name)
		if c.args != "" {
			fmt.Fprintf(&b, " \\fI%s\\fR", roff(c.args))
		}
		fmt.Fprintf(&b, "\n%s\n", roff(c.summary))
	}
	b.WriteString(".SH ACCESS\n")
	b.WriteString(roff("The daemon authenticates every connection by its peer credentials. By default every local user may read (inspect, monitor, drivers, status, why, leaks), as with ioreg or udevadm; only root and the users and groups of --admin-uids and --admin-gids see which processes other users' user clients belong to, and may load, unload, terminate and run sim steps; --allow-uids, --allow-gids and --any-user give the right to open devices.") + "\n")
	b.WriteString(".SH ENVIRONMENT\n.TP\n.B DRVCTL_SOCKET\n" + roff("the daemon's socket, when --socket is not given") + "\n")
	b.WriteString(".SH FILES\n.TP\n.I /run/drvkit/drvkit.sock\n" + roff("the system daemon's socket") + "\n.TP\n.I /etc/drvkit/drivers.d\n" + roff("driver bundles loaded at start") + "\n")
	b.WriteString(".SH EXIT STATUS\n" + roff("0 on success, 1 when the operation failed, 2 when the command line is wrong or names something the daemon does not know.") + "\n")
	b.WriteString(".SH SEE ALSO\n")
	refs := make([]string, len(cmds))
	for i, c := range cmds {
		refs[i] = fmt.Sprintf(".BR drvctl\\-%s (1)", c.name)
	}
	b.WriteString(strings.Join(refs, ",\n") + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func writeManCommand(w io.Writer, c cmdInfo) error {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH DRVCTL\\-%s 1 \"\" %q \"drvkit manual\"\n", strings.ToUpper(roff(c.name)), manDate)
	fmt.Fprintf(&b, ".SH NAME\ndrvctl\\-%s \\- %s\n", roff(c.name), roff(c.summary))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.B drvctl %s\n[\\fIflags\\fR]", roff(c.name))
	if c.args != "" {
		fmt.Fprintf(&b, " \\fI%s\\fR", roff(c.args))
	}
	b.WriteString("\n")
	if len(c.flags) > 0 {
		b.WriteString(".SH OPTIONS\n")
		for _, f := range c.flags {
			fmt.Fprintf(&b, ".TP\n.B %s", roff(dashes(f.name)))
			if f.argName != "" {
				fmt.Fprintf(&b, " \\fI%s\\fR", roff(f.argName))
			}
			b.WriteString("\n" + roff(f.usage))
			if f.def != "" {
				b.WriteString(" (default " + roff(f.def) + ")")
			}
			b.WriteString("\n")
		}
	}
	b.WriteString(".SH SEE ALSO\n.BR drvctl (1)\n")
	_, err := io.WriteString(w, b.String())
	return err
}
