// Package verifydemo holds what the tests of the buggy example drivers share:
// run a test binary as a user runs a replay command, and find the line a
// source file marks as the bug.
package verifydemo

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// BugLine returns the 1-based line of file containing marker.
func BugLine(file, marker string) (int, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if strings.Contains(sc.Text(), marker) {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: no line with %q", file, marker)
}

var replayRE = regexp.MustCompile(`^go test (\S+) -run '([^']+)' -count=1 -verify\.replay='([^']*)'$`)

// RunReplay runs a replay command that verify.Run printed ("go test PKG
// -run 'RE' -count=1 -verify.replay='SCHEDULE'") on this test binary,
// which is what go test would build from PKG, and returns its output.
func RunReplay(command string) (string, error) {
	m := replayRE.FindStringSubmatch(command)
	if m == nil {
		return "", fmt.Errorf("not a replay command: %q", command)
	}
	cmd := exec.Command(os.Args[0], "-test.run="+m[2], "-test.count=1", "-test.v", "-verify.replay="+m[3])
	out, err := cmd.CombinedOutput()
	if err == nil {
		return string(out), fmt.Errorf("the replay passed:\n%s", out)
	}
	return string(out), nil
}

const envChild = "DRVKIT_VERIFY_DEMO_CHILD"

// InChild reports whether this test binary is RunChild's child.
func InChild() bool { return os.Getenv(envChild) != "" }

// RunChild runs test (a test that fails on purpose in the child) in a
// child test binary and returns its output; it is an error if it passed.
func RunChild(test string) (string, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envChild+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		return string(out), fmt.Errorf("%s passed in the child:\n%s", test, out)
	}
	return string(out), nil
}
