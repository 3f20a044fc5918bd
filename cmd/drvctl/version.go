package main

import (
	"flag"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
)

func init() {
	register(&command{name: "version", summary: "print drvctl's version, VCS revision and Go version (as --version)", setup: setupVersion})
}

// buildVersion is what `drvctl version` and `drvctl status` say: the
// module version (a tag with go install, "(devel)" in a checkout), the VCS
// revision with "+dirty" for uncommitted changes, and the Go version — all
// from the binary's build info, so a copied binary still tells what it is.
var buildVersion = sync.OnceValue(func() versionInfo {
	v := versionInfo{Version: "(devel)", GoVersion: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.GoVersion = bi.GoVersion
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.modified":
			v.Dirty = s.Value == "true"
		case "vcs.time":
			v.Time = s.Value
		}
	}
	return v
})

type versionInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Dirty     bool   `json:"dirty,omitempty"`
	Time      string `json:"time,omitempty"` // of the revision, RFC 3339
	GoVersion string `json:"go_version"`
}

// String is one line: "drvctl (devel) rev 5c6bd71a3f2e+dirty (2026-12-05T00:10:00Z), go1.26.0".
func (v versionInfo) String() string {
	var b strings.Builder
	b.WriteString(v.Version)
	if v.Revision != "" {
		rev := v.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		fmt.Fprintf(&b, " rev %s", rev)
		if v.Dirty {
			b.WriteString("+dirty")
		}
		if v.Time != "" {
			fmt.Fprintf(&b, " (%s)", v.Time)
		}
	}
	fmt.Fprintf(&b, ", %s", v.GoVersion)
	return b.String()
}

func setupVersion(fs *flag.FlagSet, e *env) func([]string) error {
	format := outputFlag(fs, "text", "json")
	pretty := prettyFlag(fs)
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		f, err := format()
		if err != nil {
			return err
		}
		if f == "json" {
			return writeJSONValue(e.stdout, buildVersion(), *pretty)
		}
		_, err = fmt.Fprintf(e.stdout, "drvctl %s\n", buildVersion())
		return err
	}
}
