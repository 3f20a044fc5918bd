// Package jsonscan writes and reads the fixed JSON shapes of drvkit's
// hand-written encoders, without reflection. AppendString writes a string
// as encoding/json does; Scanner reads back what such an encoder
// produced: literals, canonical unsigned integers and strings of
// printable ASCII without escapes. Anything else makes a method
// report false, and the caller falls back to encoding/json — so the
// scanner never has to agree with encoding/json on forms it does not
// accept (the callers' fuzz tests check that both agree on what it does).
package jsonscan

// Scanner reads B from offset I.
type Scanner struct {
	B []byte
	I int
}

// Lit consumes s if the input continues with it.
func (p *Scanner) Lit(s string) bool {
	if len(p.B)-p.I < len(s) || string(p.B[p.I:p.I+len(s)]) != s {
		return false
	}
	p.I += len(s)
	return true
}

// Uint consumes a JSON number that is a uint64 in canonical form: no sign,
// no leading zero, no fraction or exponent, no overflow (encoding/json
// rejects those for a uint64 field, or accepts forms this does not).
func (p *Scanner) Uint() (uint64, bool) {
	start := p.I
	var v uint64
	for p.I < len(p.B) && p.B[p.I] >= '0' && p.B[p.I] <= '9' {
		d := uint64(p.B[p.I] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
		p.I++
	}
	n := p.I - start
	if n == 0 || (n > 1 && p.B[start] == '0') {
		return 0, false
	}
	return v, true
}

// Str consumes a JSON string of printable ASCII without escapes and
// returns its contents (aliasing the input).
func (p *Scanner) Str() ([]byte, bool) {
	if p.I >= len(p.B) || p.B[p.I] != '"' {
		return nil, false
	}
	start := p.I + 1
	for i := start; i < len(p.B); i++ {
		switch ch := p.B[i]; {
		case ch == '"':
			p.I = i + 1
			return p.B[start:i], true
		case ch < 0x20 || ch == '\\' || ch >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// Done reports whether the whole input was read.
func (p *Scanner) Done() bool { return p.I == len(p.B) }
