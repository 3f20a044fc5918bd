package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/drvkit/drvkit/refcount"
)

// FrameString names a frame the way reports print a culprit: the function
// and its file by import path, which is the same on every machine
// ("github.com/you/drv.(*client).attach github.com/you/drv/client.go:42").
func FrameString(f refcount.Frame) string {
	return fmt.Sprintf("%s %s:%d", f.Func, importFile(f), f.Line)
}

// importFile is f's file named by its package's import path.
func importFile(f refcount.Frame) string {
	fn := f.Func
	slash := strings.LastIndexByte(fn, '/')
	pkg := fn
	if dot := strings.IndexByte(fn[slash+1:], '.'); dot >= 0 {
		pkg = fn[:slash+1+dot]
	}
	if pkg == "" || f.File == "" {
		return f.File
	}
	return pkg + "/" + path.Base(f.File)
}

func problemsText(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "  %s: %s\n", p.Kind, indent(strings.TrimRight(p.Text, "\n"), "    "))
		if p.Culprit != nil {
			fmt.Fprintf(&b, "    culprit: %s\n", FrameString(*p.Culprit))
		}
	}
	return b.String()
}

func indent(s, pre string) string {
	return strings.ReplaceAll(s, "\n", "\n"+pre)
}

// CoverageLine sums up the systematic pairs in one line.
func (r *Report) CoverageLine() string {
	return coverageLine(r)
}

func coverageLine(r *Report) string {
	c := r.Covered()
	return fmt.Sprintf("%d (step × fault) pairs: %d covered, %d unreached, %d n/a, %d failed, %d skipped",
		len(r.Pairs), c["covered"], c["unreached"], c["n/a"], c["failed"], c["skipped"])
}

var statusMark = map[string]string{"covered": "+", "unreached": ".", "n/a": "-", "failed": "X", "skipped": "s"}

// WriteText writes the report for people: the verdict, what was covered
// (the step × fault matrix), and a failure with its culprit, schedules,
// replay command and problems.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	verdict := "PASS"
	if !r.Passed() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "%s: verify %s on %s\n", verdict, r.Driver, r.Device)
	fmt.Fprintf(&b, "runs: %d (%d systematic, %d random", r.Runs, r.Runs-r.Random, r.Random)
	if r.Random > 0 {
		fmt.Fprintf(&b, ", seeds %d..%d", r.Seeds[0], r.Seeds[1])
	}
	fmt.Fprintf(&b, "), failures: %d\n", r.Failures)
	if len(r.Pairs) > 0 {
		fmt.Fprintf(&b, "systematic: %s\n", coverageLine(r))
		r.writeMatrix(&b)
		var why, unreached []string
		seen := map[string]bool{}
		for _, p := range r.Pairs {
			if p.Status == "n/a" && p.Why != "cannot happen at this step" && !seen[p.Kind] {
				seen[p.Kind] = true
				why = append(why, fmt.Sprintf("  %s: %s", p.Kind, p.Why))
			}
			if p.Status == "unreached" && !seen["@"+string(p.Step)] {
				seen["@"+string(p.Step)] = true
				unreached = append(unreached, fmt.Sprintf("  %s: %s", p.Step, p.Why))
			}
		}
		if len(why) > 0 {
			b.WriteString("not applicable here:\n" + strings.Join(why, "\n") + "\n")
		}
		if len(unreached) > 0 {
			b.WriteString("steps never reached:\n" + strings.Join(unreached, "\n") + "\n")
		}
	}
	if len(r.Faults) > 0 {
		var ks []string
		for k := range r.Faults {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		var parts []string
		for _, k := range ks {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.Faults[k]))
		}
		fmt.Fprintf(&b, "faults fired: %s\n", strings.Join(parts, ", "))
	}
	if r.DirectRuns > 0 {
		fmt.Fprintf(&b, "runs with an application on a direct call channel: %d\n", r.DirectRuns)
	}
	if n := r.Faults["driver-kill"]; n > 0 {
		fmt.Fprintf(&b, "driver processes SIGKILLed: %d (of %d driver-kill faults fired; the others found no process: not spawned yet or already exited)\n", r.DriverKills, n)
		var none []string
		for _, p := range r.Pairs {
			if p.Kind == "driver-kill" && p.Why == noProcessWhy {
				none = append(none, string(p.Step))
			}
		}
		if len(none) > 0 {
			fmt.Fprintf(&b, "driver-kill found no process at: %s\n", strings.Join(none, ", "))
		}
	}
	if f := r.Failure; f != nil {
		b.WriteString("\n")
		if f.Culprit != nil {
			fmt.Fprintf(&b, "culprit: %s\n", FrameString(*f.Culprit))
		} else {
			b.WriteString("culprit: no frame outside drvkit (a drvkit bug, or a problem of the run itself)\n")
		}
		fmt.Fprintf(&b, "found:   %s\n", f.Found)
		fmt.Fprintf(&b, "shrunk:  %s (%d shrink runs)\n", f.Shrunk, f.ShrinkRuns)
		if f.Seed != 0 {
			fmt.Fprintf(&b, "seed:    %d\n", f.Seed)
		}
		fmt.Fprintf(&b, "replay:  %s\n", f.Replay)
		b.WriteString("problems:\n")
		b.WriteString(problemsText(f.Problems))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Report) writeMatrix(b *strings.Builder) {
	var kinds []string
	var steps []Step
	cell := map[string]string{}
	for _, p := range r.Pairs {
		if !contains(kinds, p.Kind) {
			kinds = append(kinds, p.Kind)
		}
		if len(steps) == 0 || steps[len(steps)-1] != p.Step {
			steps = append(steps, p.Step)
		}
		cell[string(p.Step)+"|"+p.Kind] = statusMark[p.Status]
	}
	b.WriteString("coverage (+ covered, . unreached, - n/a, X failed, s skipped):\n")
	fmt.Fprintf(b, "  %-14s", "")
	for _, k := range kinds {
		fmt.Fprintf(b, " %s", k)
	}
	b.WriteString("\n")
	for _, s := range steps {
		fmt.Fprintf(b, "  %-14s", s)
		for _, k := range kinds {
			m := cell[string(s)+"|"+k]
			if m == "" {
				m = " "
			}
			pad := len(k) - 1
			fmt.Fprintf(b, " %s%s%s", strings.Repeat(" ", pad/2), m, strings.Repeat(" ", pad-pad/2))
		}
		b.WriteString("\n")
	}
}

// jsonReport is the -o json form: the report with a schema version.
type jsonReport struct {
	SchemaVersion int  `json:"schema_version"`
	Passed        bool `json:"passed"`
	*Report
	Covered map[string]int `json:"covered"`
}

// WriteJSON writes the report as one JSON document (schema_version 1),
// for CI.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(jsonReport{SchemaVersion: 1, Passed: r.Passed(), Report: r, Covered: r.Covered()})
}
