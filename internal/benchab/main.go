// Command benchab compares a package's benchmarks between two builds on a
// noisy machine: it builds the package's test binary at a base revision
// (in a temporary git worktree) and from the working tree, runs the two
// alternately, and prints each metric's median and range for each build.
//
// Alternating matters here: on a shared 2-core VM a run's absolute
// figures drift by tens of percent within minutes, and even the ratios
// to a floor measured in the same run move by a few percent; two builds
// run one after the other would compare two moments of the machine.
//
//	benchab -base REV -pkg ./userclient/server -bench 'NotificationFanout/untraced-handler' [-n 4] [-benchtime 300x] [-metrics x-floor-p50,x-floor-cpu]
//
// It is how docs/performance.md's before/after figures were measured.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

func main() {
	base := flag.String("base", "HEAD", "git revision of the base build")
	pkg := flag.String("pkg", "", "package whose benchmarks to compare (./path)")
	bench := flag.String("bench", ".", "benchmark regexp (-test.bench)")
	n := flag.Int("n", 4, "runs of each build, alternated")
	benchtime := flag.String("benchtime", "", "-test.benchtime for each run")
	metrics := flag.String("metrics", "", "comma-separated metrics to print (default all)")
	flag.Parse()
	if *pkg == "" || *n < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(os.Stdout, *base, *pkg, *bench, *benchtime, *n, splitList(*metrics)); err != nil {
		fmt.Fprintln(os.Stderr, "benchab:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func run(w io.Writer, base, pkg, bench, benchtime string, n int, metrics []string) error {
	dir, err := os.MkdirTemp("", "benchab-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tree := filepath.Join(dir, "base")
	if out, err := exec.Command("git", "worktree", "add", "--detach", tree, base).CombinedOutput(); err != nil {
		return fmt.Errorf("git worktree add %s: %v: %s", base, err, out)
	}
	defer exec.Command("git", "worktree", "remove", "--force", tree).Run()
	bins := map[string]string{"base": filepath.Join(dir, "base.test"), "new": filepath.Join(dir, "new.test")}
	for build, src := range map[string]string{"base": tree, "new": "."} {
		cmd := exec.Command("go", "test", "-c", "-o", bins[build], pkg)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s (%s): %v: %s", build, src, err, out)
		}
	}
	args := []string{"-test.run", "^$", "-test.bench", bench}
	if benchtime != "" {
		args = append(args, "-test.benchtime", benchtime)
	}
	res := results{}
	dirs := map[string]string{"base": filepath.Join(tree, pkg), "new": pkg}
	for i := range n {
		for _, build := range []string{"base", "new"} {
			cmd := exec.Command(bins[build], args...)
			cmd.Dir = dirs[build] // the package's directory, as go test runs it
			out, err := cmd.Output()
			if err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return fmt.Errorf("run %d of %s: %v: %s", i+1, build, err, ee.Stderr)
				}
				return err
			}
			res.add(build, out)
		}
	}
	return res.print(w, metrics)
}

// results holds every metric's values by benchmark, build and metric.
type results map[string]map[string]map[string][]float64

// add parses go test's benchmark lines: a name, an iteration count, then
// value-unit pairs.
func (r results) add(build string, out []byte) {
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			if r[f[0]] == nil {
				r[f[0]] = map[string]map[string][]float64{}
			}
			if r[f[0]][build] == nil {
				r[f[0]][build] = map[string][]float64{}
			}
			r[f[0]][build][f[i+1]] = append(r[f[0]][build][f[i+1]], v)
		}
	}
}

// print writes, per benchmark and metric, each build's median and range.
func (r results) print(w io.Writer, only []string) error {
	if len(r) == 0 {
		return errors.New("no benchmark lines: does -bench match anything?")
	}
	names := make([]string, 0, len(r))
	for name := range r {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintln(w, name)
		var units []string
		for u := range r[name]["new"] {
			if len(only) == 0 || slices.Contains(only, u) {
				units = append(units, u)
			}
		}
		slices.Sort(units)
		for _, u := range units {
			fmt.Fprintf(w, "  %-22s", u)
			for _, build := range []string{"base", "new"} {
				vs := r[name][build][u]
				if len(vs) == 0 {
					fmt.Fprintf(w, "  %s -", build)
					continue
				}
				fmt.Fprintf(w, "  %s %s [%s–%s] (%d)", build, num(median(vs)), num(slices.Min(vs)), num(slices.Max(vs)), len(vs))
			}
			fmt.Fprintln(w)
		}
	}
	return nil
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// num writes 4 significant digits, large values in full.
func num(v float64) string {
	if math.Abs(v) >= 1000 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}
