package bundle

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// locator finds the line of a key in a manifest, for errors found after
// decoding (BurntSushi/toml keeps key positions to itself). It reads the
// usual shapes — [table], [[array]], key = value, dotted.key = value — and
// for anything else (an inline table's inner key) names the nearest
// enclosing key it found.
type locator struct {
	lines map[string]int // indexed path ("personality.1.match.vid") → line
}

func newLocator(src []byte) *locator {
	l := &locator{lines: map[string]int{}}
	arrays := map[string]int{} // resolved array path → elements seen
	var cur []string
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#':
			continue
		case strings.HasPrefix(line, "[["):
			end := strings.Index(line, "]]")
			if end < 0 {
				continue
			}
			parts := splitKey(line[2:end])
			if len(parts) == 0 {
				continue
			}
			parent := l.resolve(arrays, parts[:len(parts)-1])
			arr := join(append(parent, parts[len(parts)-1]))
			idx := arrays[arr]
			arrays[arr] = idx + 1
			cur = append(append(parent, parts[len(parts)-1]), strconv.Itoa(idx))
			l.record(cur, n)
			l.record(cur[:len(cur)-1], n)
		case line[0] == '[':
			end := strings.IndexByte(line, ']')
			if end < 0 {
				continue
			}
			cur = l.resolve(arrays, splitKey(line[1:end]))
			l.record(cur, n)
		default:
			eq := strings.IndexByte(line, '=')
			if eq <= 0 {
				continue
			}
			key := splitKey(line[:eq])
			for i := 1; i <= len(key); i++ {
				l.record(append(append([]string(nil), cur...), key[:i]...), n)
			}
		}
	}
	return l
}

// resolve adds the current index after every array of tables in path.
func (l *locator) resolve(arrays map[string]int, path []string) []string {
	var out []string
	for _, p := range path {
		out = append(out, p)
		if n, ok := arrays[join(out)]; ok && n > 0 {
			out = append(out, strconv.Itoa(n-1))
		}
	}
	return out
}

// record keeps the first line of path.
func (l *locator) record(path []string, n int) {
	k := join(path)
	if _, ok := l.lines[k]; !ok {
		l.lines[k] = n
	}
	// Undecoded keys come without indexes: keep the first element's line.
	var plain []string
	for _, p := range path {
		if _, err := strconv.Atoi(p); err != nil {
			plain = append(plain, p)
		}
	}
	if k := "\x00" + join(plain); l.lines[k] == 0 {
		l.lines[k] = n
	}
}

// line returns the line of path or of its nearest located ancestor; 0:
// none.
func (l *locator) line(path []string) int {
	for i := len(path); i > 0; i-- {
		if n, ok := l.lines[join(path[:i])]; ok {
			return n
		}
		if n := l.lines["\x00"+join(path[:i])]; n > 0 {
			return n
		}
	}
	return 0
}

func join(p []string) string { return strings.Join(p, ".") }

// splitKey splits a dotted key, unquoting its parts.
func splitKey(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ".") {
		p = strings.TrimSpace(p)
		if len(p) >= 2 && (p[0] == '"' || p[0] == '\'') && p[len(p)-1] == p[0] {
			p = p[1 : len(p)-1]
		}
		if p == "" {
			return nil
		}
		out = append(out, p)
	}
	return out
}
