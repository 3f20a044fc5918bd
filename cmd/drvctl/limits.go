package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/drvkit/drvkit/userclient/server"
)

// limitsFlag is serve --limits: key=value pairs over server.Limits, each
// range-checked; keys not given keep their defaults.
type limitsFlag struct{ l server.Limits }

// limitKeys maps a --limits key to its field; the order is the help's.
var limitKeys = []struct {
	key  string
	ptr  func(*server.Limits) any // *int or *time.Duration
	help string
}{
	{"conns", func(l *server.Limits) any { return &l.MaxConns }, "connections in all (uid 0 has 16 more)"},
	{"conns-per-uid", func(l *server.Limits) any { return &l.MaxConnsPerUID }, "connections per user"},
	{"incomplete", func(l *server.Limits) any { return &l.MaxIncomplete }, "connections before their handshake"},
	{"handles", func(l *server.Limits) any { return &l.MaxHandles }, "open handles per connection"},
	{"handles-per-uid", func(l *server.Limits) any { return &l.MaxHandlesPerUID }, "open handles per user"},
	{"inflight-per-uid", func(l *server.Limits) any { return &l.MaxInflightPerUID }, "calls in flight per user"},
	{"inflight", func(l *server.Limits) any { return &l.MaxInflightTotal }, "calls in flight in all"},
	{"waiting-opens", func(l *server.Limits) any { return &l.MaxWaitingOpens }, "opens waiting for a service, per connection"},
	{"waiting-opens-total", func(l *server.Limits) any { return &l.MaxWaitingOpensTotal }, "opens waiting for a service, in all"},
	{"frame-timeout", func(l *server.Limits) any { return &l.FrameTimeout }, "time to complete a frame once it started; off: none"},
	{"idle-timeout", func(l *server.Limits) any { return &l.IdleTimeout }, "close a connection holding nothing after this; off: never"},
}

// Ranges: wide enough for any real machine, narrow enough that a typo
// (an extra zero, a wrapped negative) is an error and not a silent
// "unlimited".
const (
	maxLimitCount = 1 << 20
	minLimitTime  = 10 * time.Millisecond
	maxLimitTime  = 24 * time.Hour
)

func (f *limitsFlag) String() string {
	if f == nil {
		return ""
	}
	var parts []string
	for _, k := range limitKeys {
		switch p := k.ptr(&f.l).(type) {
		case *int:
			if *p != 0 {
				parts = append(parts, fmt.Sprintf("%s=%d", k.key, *p))
			}
		case *time.Duration:
			switch {
			case *p < 0:
				parts = append(parts, k.key+"=off")
			case *p > 0:
				parts = append(parts, fmt.Sprintf("%s=%v", k.key, *p))
			}
		}
	}
	return strings.Join(parts, ",")
}

func (f *limitsFlag) Set(s string) error {
	for _, kv := range strings.Split(s, ",") {
		key, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return fmt.Errorf("%q is not key=value", kv)
		}
		i := -1
		for j := range limitKeys {
			if limitKeys[j].key == key {
				i = j
			}
		}
		if i < 0 {
			return fmt.Errorf("unknown limit %q (known: %s)", key, limitKeyList())
		}
		switch p := limitKeys[i].ptr(&f.l).(type) {
		case *int:
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 1 || n > maxLimitCount {
				return fmt.Errorf("limit %s=%q: want a whole number from 1 to %d", key, val, maxLimitCount)
			}
			*p = int(n)
		case *time.Duration:
			if val == "off" {
				*p = -1
				continue
			}
			d, err := time.ParseDuration(val)
			if err != nil || d < minLimitTime || d > maxLimitTime {
				return fmt.Errorf("limit %s=%q: want off or a duration from %v to %v", key, val, minLimitTime, maxLimitTime)
			}
			*p = d
		}
	}
	return nil
}

func limitKeyList() string {
	var keys []string
	for _, k := range limitKeys {
		keys = append(keys, k.key)
	}
	return strings.Join(keys, ", ")
}

// limitsUsage is the --limits help: every key with its default.
func limitsUsage() string {
	d := server.DefaultLimits
	var b strings.Builder
	b.WriteString("resource `limits` of the socket, comma-separated key=value:")
	for _, k := range limitKeys {
		fmt.Fprintf(&b, " %s: %s (default %v);", k.key, k.help, reflectDeref(k.ptr(&d)))
	}
	return strings.TrimSuffix(b.String(), ";")
}

func reflectDeref(p any) any {
	switch p := p.(type) {
	case *int:
		return *p
	case *time.Duration:
		return *p
	}
	return p
}

// checkServeDurations refuses timeouts that cannot mean what they say: a
// --shutdown-timeout of 0 would report every service as leaked before it
// had a chance to be freed.
func checkServeDurations(o serveOptions) error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"terminate-timeout", o.termTimeout}, {"shutdown-timeout", o.closeTimeout}} {
		if d.v < minLimitTime || d.v > maxLimitTime {
			return fmt.Errorf("--%s %v: want a duration from %v to %v", d.flag, d.v, minLimitTime, maxLimitTime)
		}
	}
	return nil
}
