package drivertable_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
)

type opener func(string) (string, error)

var openerKey = drivertable.NewKey[opener]("thing")

type nopDriver struct{}

func (nopDriver) Start(context.Context, *driver.Service) error { return nil }
func (nopDriver) Stop(*driver.Service)                         {}

func thingEntry() drivertable.Entry {
	return drivertable.Entry{
		Name:  "thing",
		Needs: []string{openerKey.Name()},
		MatchKeys: []drivertable.MatchKey{
			drivertable.HexKey("vid", "idVendor", 16, "vendor"),
			drivertable.IntKey("n", "num", 0, 9, "number"),
			drivertable.StringKey("model", "model", "model"),
		},
		Require: []driver.Match{driver.MatchFunc(func(p driver.Properties) bool { _, ok := p.String("node"); return ok })},
		Personalities: func(r *drivertable.Resources) ([]driver.Personality, error) {
			if _, err := openerKey.From(r); err != nil {
				return nil, err
			}
			return []driver.Personality{{Name: "thing", Class: "Thing", ProviderClass: "Nub",
				Match: []driver.Match{driver.MatchValue("kind", "thing")},
				New:   func() driver.Driver { return nopDriver{} }}}, nil
		},
	}
}

func TestTable(t *testing.T) {
	tbl, err := drivertable.New(thingEntry())
	require.NoError(t, err)
	require.Equal(t, []string{"thing"}, tbl.Names())

	err = tbl.Add(thingEntry())
	require.ErrorIs(t, err, drivertable.ErrExists)
	require.EqualError(t, err, "add thing: driver already in the table")

	_, err = tbl.Lookup("bogus")
	require.ErrorIs(t, err, drivertable.ErrUnknown)
	require.EqualError(t, err, `unknown driver "bogus" (have thing)`)

	require.ErrorIs(t, tbl.Add(drivertable.Entry{Name: "x"}), drivertable.ErrBadEntry)
	require.ErrorIs(t, tbl.Add(drivertable.Entry{Personalities: thingEntry().Personalities}), drivertable.ErrBadEntry)
	bad := thingEntry()
	bad.Name = "dup-keys"
	bad.MatchKeys = append(bad.MatchKeys, bad.MatchKeys[0])
	require.ErrorIs(t, tbl.Add(bad), drivertable.ErrBadEntry)

	require.True(t, tbl.Remove("thing"))
	require.False(t, tbl.Remove("thing"))
	require.Empty(t, tbl.Names())
}

func TestEntryWiring(t *testing.T) {
	e := thingEntry()
	res := drivertable.NewResources()

	// Nothing provided: the error names the driver and what it needs.
	_, err := e.Defaults(res)
	require.ErrorIs(t, err, drivertable.ErrNoResource)
	require.EqualError(t, err, "wire thing: needs thing: not provided by this daemon")

	made := 0
	drivertable.Provide(res, openerKey, func() (opener, error) {
		made++
		return func(s string) (string, error) { return s, nil }, nil
	})
	require.True(t, res.Has("thing"))
	require.Equal(t, []string{"thing"}, res.Names())
	ps, err := e.Defaults(res)
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.Len(t, ps[0].Match, 2, "Require comes first, then the default match")
	_, err = e.Defaults(res)
	require.NoError(t, err)
	require.Equal(t, 1, made, "a resource is made once")

	// A key of another type under the same name is refused clearly.
	_, err = drivertable.NewKey[int]("thing").From(res)
	require.ErrorContains(t, err, "wire thing: provided a drivertable_test.opener, want a int")

	// A failing provider's error says which resource.
	res2 := drivertable.NewResources()
	drivertable.Provide(res2, openerKey, func() (opener, error) { return nil, errors.New("no such node") })
	_, err = e.Defaults(res2)
	require.EqualError(t, err, "wire thing: no such node")
}

func TestCustomPersonality(t *testing.T) {
	e := thingEntry()
	res := drivertable.NewResources()
	drivertable.Provide(res, openerKey, func() (opener, error) { return nil, nil })

	tests := []struct {
		key, value string
		err        string
	}{
		{key: "vid", value: "0x1D50"},
		{key: "vid", value: "10000", err: `match thing: bad match: vid "10000" is not a 16-bit hex number`},
		{key: "n", value: "7"},
		{key: "n", value: "10", err: `match thing: bad match: n "10" is not a number from 0 to 9`},
		{key: "model", value: "QEMU HARDDISK"},
		{key: "colour", value: "red", err: `match thing: bad match: unknown key "colour" (want vid, n, model)`},
	}
	var match []driver.Match
	for _, tt := range tests {
		m, err := e.ParseMatch(tt.key, tt.value)
		if tt.err != "" {
			require.ErrorIs(t, err, drivertable.ErrBadMatch)
			require.EqualError(t, err, tt.err)
			continue
		}
		require.NoError(t, err)
		match = append(match, m)
	}
	p, err := e.Custom(res, "mine", 100, match)
	require.NoError(t, err)
	require.Equal(t, "mine", p.Name)
	require.Equal(t, "Thing", p.Class, "the template's instance class")
	require.Equal(t, "Nub", p.ProviderClass)
	require.Equal(t, 100, p.Score)
	require.Len(t, p.Match, 4, "Require and the three keys, not the default match")
	require.NotNil(t, p.New)

	_, err = e.Custom(res, "none", 1, nil)
	require.ErrorIs(t, err, drivertable.ErrBadMatch)

	noKeys := thingEntry()
	noKeys.MatchKeys = nil
	_, err = noKeys.ParseMatch("vid", "1")
	require.EqualError(t, err, "match thing: bad match: the driver takes no custom personalities")
}

func TestOriginString(t *testing.T) {
	require.Equal(t, "built-in", drivertable.Builtin.String())
	require.Equal(t, "bundle", drivertable.Bundle.String())
	require.Equal(t, "origin(7)", drivertable.Origin(7).String())
}
