package jsonscan

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestScanner(t *testing.T) {
	p := Scanner{B: []byte(`{"id":42,"name":"sg0"}`)}
	require.True(t, p.Lit(`{"id":`))
	v, ok := p.Uint()
	require.True(t, ok)
	require.EqualValues(t, 42, v)
	require.True(t, p.Lit(`,"name":`))
	s, ok := p.Str()
	require.True(t, ok)
	require.Equal(t, "sg0", string(s))
	require.True(t, p.Lit("}"))
	require.True(t, p.Done())

	for _, bad := range []string{"", "-1", "01", "1.5", "18446744073709551616"} {
		q := Scanner{B: []byte(bad)}
		_, ok := q.Uint()
		if ok {
			require.False(t, q.Done(), "%q is not a canonical uint64", bad)
		}
	}
	v, ok = (&Scanner{B: []byte("18446744073709551615")}).Uint()
	require.True(t, ok)
	require.EqualValues(t, uint64(1<<64-1), v)
	for _, bad := range []string{`"a\"b"`, "\"\x01\"", `"é"`, `"open`, `x`} {
		q := Scanner{B: []byte(bad)}
		_, ok := q.Str()
		require.False(t, ok, "%q", bad)
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "echo", `a"b`, `back\slash`, "<&>", "tab\t", "é", "\x00", "\xff"} {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(AppendString(nil, s)), "%q", s)
	}
}
