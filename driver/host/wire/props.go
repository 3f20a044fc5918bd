package wire

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
)

// EncodeProperties turns a nub's properties into Nub.Properties and
// Nub.Types. Integers, strings, booleans, floats and byte strings keep
// their type; any other value is sent as its fmt %v text, type "string".
func EncodeProperties(props map[string]any) (map[string]json.RawMessage, map[string]string) {
	if len(props) == 0 {
		return nil, nil
	}
	vals := make(map[string]json.RawMessage, len(props))
	types := make(map[string]string, len(props))
	for k, v := range props {
		var typ string
		var x any = v
		switch t := v.(type) {
		case []byte:
			typ = "bytes"
		case string:
			typ = "string"
		case bool:
			typ = "bool"
		case nil:
			continue
		default:
			rv := reflect.ValueOf(v)
			switch rv.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
				typ = rv.Kind().String()
			case reflect.Float32, reflect.Float64:
				typ = rv.Kind().String()
				if f := rv.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
					typ, x = "string", fmt.Sprint(f)
				}
			default:
				typ, x = "string", fmt.Sprint(t)
			}
		}
		b, err := json.Marshal(x)
		if err != nil {
			typ = "string"
			b, _ = json.Marshal(fmt.Sprint(v))
		}
		vals[k] = b
		types[k] = typ
	}
	return vals, types
}

// DecodeProperties is the inverse of EncodeProperties. A property without
// a type is taken as JSON says: a string, a bool, an integer (int64, or
// uint64 when it is larger) or a float64.
func DecodeProperties(n *Nub) (map[string]any, error) {
	out := make(map[string]any, len(n.Properties))
	for k, raw := range n.Properties {
		v, err := decodeProp(raw, n.Types[k])
		if err != nil {
			return nil, fmt.Errorf("%w: property %q: %v", ErrMalformed, clip(k), err)
		}
		out[k] = v
	}
	return out, nil
}

func decodeProp(raw json.RawMessage, typ string) (any, error) {
	switch typ {
	case "bytes":
		var b []byte
		err := json.Unmarshal(raw, &b)
		return b, err
	case "string":
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case "bool":
		var b bool
		err := json.Unmarshal(raw, &b)
		return b, err
	case "float32", "float64":
		var f float64
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, err
		}
		if typ == "float32" {
			return float32(f), nil
		}
		return f, nil
	case "int", "int8", "int16", "int32", "int64":
		bits := map[string]int{"int": 64, "int8": 8, "int16": 16, "int32": 32, "int64": 64}[typ]
		n, err := strconv.ParseInt(string(raw), 10, bits)
		if err != nil {
			return nil, fmt.Errorf("not an %s: %s", typ, clip(string(raw)))
		}
		switch typ {
		case "int":
			return int(n), nil
		case "int8":
			return int8(n), nil
		case "int16":
			return int16(n), nil
		case "int32":
			return int32(n), nil
		}
		return n, nil
	case "uint", "uint8", "uint16", "uint32", "uint64":
		bits := map[string]int{"uint": 64, "uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64}[typ]
		n, err := strconv.ParseUint(string(raw), 10, bits)
		if err != nil {
			return nil, fmt.Errorf("not a %s: %s", typ, clip(string(raw)))
		}
		switch typ {
		case "uint":
			return uint(n), nil
		case "uint8":
			return uint8(n), nil
		case "uint16":
			return uint16(n), nil
		case "uint32":
			return uint32(n), nil
		}
		return n, nil
	case "":
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		if f, ok := v.(float64); ok {
			if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
				return n, nil
			}
			if n, err := strconv.ParseUint(string(raw), 10, 64); err == nil {
				return n, nil
			}
			return f, nil
		}
		switch v.(type) {
		case string, bool:
			return v, nil
		}
		return nil, fmt.Errorf("not a string, number or boolean")
	}
	return nil, fmt.Errorf("unknown type %q", clip(typ))
}

// MessageData is a driver message's data as it travels, in either
// direction: bytes as they are, a string's bytes, an error's text,
// anything else as JSON — what an application would get in process.
func MessageData(d any) ([]byte, error) {
	switch v := d.(type) {
	case nil:
		return nil, nil
	case []byte:
		return v, nil
	case string:
		return []byte(v), nil
	case error:
		return []byte(v.Error()), nil
	}
	return json.Marshal(d)
}
