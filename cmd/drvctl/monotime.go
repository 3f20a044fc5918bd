package main

import (
	"errors"
	"strconv"
	"strings"
)

// monoTime is a CLOCK_MONOTONIC time in microseconds, the precision
// udevadm monitor prints. In JSON it is the same fixed-precision decimal
// string the text lines show ("1011.441741"): a float would print
// artefacts such as 1011.4417415190001 and lose digits past 2^53.
type monoTime int64

// String is seconds with six decimals.
func (t monoTime) String() string {
	sign := ""
	if t < 0 {
		sign, t = "-", -t
	}
	frac := strconv.FormatInt(int64(t%1e6), 10)
	return sign + strconv.FormatInt(int64(t/1e6), 10) + "." + strings.Repeat("0", 6-len(frac)) + frac
}

func (t monoTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.String() + `"`), nil
}

var errMonoTime = errors.New("want seconds with up to six decimals")

func (t *monoTime) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return errMonoTime
	}
	v, err := parseMonoTime(s)
	if err != nil {
		return err
	}
	*t = v
	return nil
}

func parseMonoTime(s string) (monoTime, error) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	sec, frac, _ := strings.Cut(s, ".")
	if sec == "" || len(frac) > 6 {
		return 0, errMonoTime
	}
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || n > (1<<63-1)/1_000_000-1 {
		return 0, errMonoTime
	}
	var f int64
	if frac != "" {
		if f, err = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64); err != nil || f < 0 {
			return 0, errMonoTime
		}
	}
	v := monoTime(n*1e6 + f)
	if neg {
		v = -v
	}
	return v, nil
}
