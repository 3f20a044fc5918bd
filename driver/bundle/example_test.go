package bundle_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/drivertable"
)

// Load a bundle directory, turn it into a driver-table entry, and see a
// bad manifest refused with its line and field.
func ExampleLoad() {
	dir, _ := os.MkdirTemp("", "bundle-example-")
	defer os.RemoveAll(dir)
	_ = os.WriteFile(filepath.Join(dir, "tablet"), []byte("#!/bin/sh\n"), 0o755)
	manifest := `name = "tablet"
version = "0.3"
[run]
executable = "tablet"
user = "65534"
[[personality]]
provider_class = "HIDDevice"
match.usage_page = 0x0d   # digitizer
`
	_ = os.WriteFile(filepath.Join(dir, bundle.ManifestName), []byte(manifest), 0o644)

	m, err := bundle.Load(dir, bundle.Options{})
	if err != nil {
		panic(err)
	}
	e := m.Entry(nil)
	ps, _ := e.Defaults(drivertable.NewResources())
	fmt.Println(m.Name, m.Version, e.Origin, ps[0].ProviderClass, m.Personalities[0].Match[0].Prop)

	bad := []byte("name = \"tablet\"\nversion = \"0.3\"\n[run]\nexecutable = \"tablet\"\nuser = \"root\"\n")
	_, err = bundle.Parse(filepath.Join(dir, "bad.toml"), bad, bundle.Options{})
	var oe *bundle.OpError
	if errors.As(err, &oe) {
		fmt.Println(oe.Line, oe.Field, errors.Is(err, bundle.ErrRoot))
	}
	// Output:
	// tablet 0.3 bundle HIDDevice primaryUsagePage
	// 5 run.user true
}
