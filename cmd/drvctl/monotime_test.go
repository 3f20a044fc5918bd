package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMonoTimeJSON(t *testing.T) {
	for _, tt := range []struct {
		t    monoTime
		want string
	}{
		{1011441741, `"1011.441741"`}, {0, `"0.000000"`}, {5, `"0.000005"`}, {-1500000, `"-1.500000"`},
	} {
		b, err := json.Marshal(tt.t)
		require.NoError(t, err)
		require.Equal(t, tt.want, string(b))
		var back monoTime
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, tt.t, back)
	}
	var v monoTime
	require.NoError(t, json.Unmarshal([]byte(`"12.5"`), &v))
	require.Equal(t, monoTime(12500000), v)
	for _, bad := range []string{`12.5`, `"x"`, `"1.1234567"`, `""`, `"1.-5"`, `"99999999999999999999"`} {
		require.Error(t, json.Unmarshal([]byte(bad), &v), bad)
	}
}

func FuzzMonoTime(f *testing.F) {
	for _, s := range []string{"1011.441741", "0.000001", "-3.5", "7", "1.", ".5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseMonoTime(s)
		if err != nil {
			return
		}
		back, err := parseMonoTime(v.String())
		require.NoError(t, err, "%q → %v", s, v)
		require.Equal(t, v, back)
	})
}
