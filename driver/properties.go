package driver

import (
	"reflect"
	"sort"
)

// Properties is an immutable snapshot of a service's properties (USB vendor
// and product, SCSI type, …). The zero value is empty. Byte slices are
// copied in and out, so nothing outside can change a snapshot.
type Properties struct {
	m map[string]any
}

// NewProperties snapshots m.
func NewProperties(m map[string]any) Properties {
	if len(m) == 0 {
		return Properties{}
	}
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = freeze(v)
	}
	return Properties{m: c}
}

func freeze(v any) any {
	if b, ok := v.([]byte); ok {
		return append([]byte(nil), b...)
	}
	return v
}

// With returns a copy of p with key set to v.
func (p Properties) With(key string, v any) Properties {
	c := make(map[string]any, len(p.m)+1)
	for k, x := range p.m {
		c[k] = x
	}
	c[key] = freeze(v)
	return Properties{m: c}
}

// Len is the number of properties.
func (p Properties) Len() int { return len(p.m) }

// Keys returns the property names, sorted.
func (p Properties) Keys() []string {
	ks := make([]string, 0, len(p.m))
	for k := range p.m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Get returns the raw value.
func (p Properties) Get(key string) (any, bool) {
	v, ok := p.m[key]
	if b, isb := v.([]byte); isb {
		return append([]byte(nil), b...), ok
	}
	return v, ok
}

// String returns a string property.
func (p Properties) String(key string) (string, bool) {
	s, ok := p.m[key].(string)
	return s, ok
}

// Int returns an integer property of any integer type as int64.
func (p Properties) Int(key string) (int64, bool) {
	return toInt(p.m[key])
}

// Uint returns an integer property as uint64; negative values are absent.
func (p Properties) Uint(key string) (uint64, bool) {
	n, ok := toInt(p.m[key])
	if !ok || n < 0 {
		if u, isu := p.m[key].(uint64); isu {
			return u, true
		}
		return 0, false
	}
	return uint64(n), true
}

// Bool returns a boolean property.
func (p Properties) Bool(key string) (bool, bool) {
	b, ok := p.m[key].(bool)
	return b, ok
}

// Bytes returns a copy of a []byte property.
func (p Properties) Bytes(key string) ([]byte, bool) {
	b, ok := p.m[key].([]byte)
	return append([]byte(nil), b...), ok
}

// Map returns a copy of all properties.
func (p Properties) Map() map[string]any {
	c := make(map[string]any, len(p.m))
	for k, v := range p.m {
		c[k] = freeze(v)
	}
	return c
}

func toInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint:
		return int64(x), true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint64:
		if x > 1<<63-1 {
			return 0, false
		}
		return int64(x), true
	case nil:
		return 0, false
	}
	// A named integer type, such as scsi.PeripheralType: a personality
	// matching MatchValue("type", scsi.TypeDisk) against the bridge's
	// uint64 property means the number.
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if u := rv.Uint(); u <= 1<<63-1 {
			return int64(u), true
		}
	}
	return 0, false
}

// Match is one criterion of a personality. Build it with MatchValue,
// MatchMasked or MatchFunc.
type Match struct {
	Key   string
	Value any
	// Mask, when non-zero, compares integers under the mask:
	// prop&Mask == Value&Mask.
	Mask uint64
	// Func, when set, decides alone (Key, Value and Mask are ignored).
	Func func(Properties) bool
}

// MatchValue matches a property equal to v; integers of any type compare by
// value.
func MatchValue(key string, v any) Match { return Match{Key: key, Value: v} }

// MatchMasked matches an integer property whose masked bits equal v's.
func MatchMasked(key string, v, mask uint64) Match { return Match{Key: key, Value: v, Mask: mask} }

// MatchFunc matches when f returns true.
func MatchFunc(f func(Properties) bool) Match { return Match{Func: f} }

func (m Match) matches(p Properties) bool {
	if m.Func != nil {
		return m.Func(p)
	}
	v, ok := p.m[m.Key]
	if !ok {
		return false
	}
	if m.Mask != 0 {
		a, ok1 := toInt(v)
		b, ok2 := toInt(m.Value)
		if u, isu := v.(uint64); isu {
			a, ok1 = int64(u), true
		}
		if u, isu := m.Value.(uint64); isu {
			b, ok2 = int64(u), true
		}
		return ok1 && ok2 && uint64(a)&m.Mask == uint64(b)&m.Mask
	}
	if a, ok1 := toInt(v); ok1 {
		b, ok2 := toInt(m.Value)
		return ok2 && a == b
	}
	if bv, isb := v.([]byte); isb {
		mv, ok := m.Value.([]byte)
		return ok && string(bv) == string(mv)
	}
	defer func() { _ = recover() }() // uncomparable values never match
	return v == m.Value
}
