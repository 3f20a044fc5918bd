package main

import (
	"encoding/json"
	"slices"
	"strconv"

	"github.com/drvkit/drvkit/internal/jsonscan"
)

// appendEntry appends e's JSON, byte for byte what encoding/json writes
// for it (FuzzAppendEntry holds it to that). The daemon encodes one entry
// per service of an inspect reply: at 100,000 services reflection and the
// per-map key sort were most of the reply's CPU.
func appendEntry(b []byte, e *serviceEntry) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, e.ID, 10)
	b = append(b, `,"class":`...)
	b = jsonscan.AppendString(b, e.Class)
	if e.Name != "" {
		b = append(b, `,"name":`...)
		b = jsonscan.AppendString(b, e.Name)
	}
	if e.Driver != "" {
		b = append(b, `,"driver":`...)
		b = jsonscan.AppendString(b, e.Driver)
	}
	b = append(b, `,"registered":`...)
	b = strconv.AppendBool(b, e.Registered)
	b = append(b, `,"matched":`...)
	b = strconv.AppendBool(b, e.Matched)
	b = append(b, `,"active":`...)
	b = strconv.AppendBool(b, e.Active)
	if e.Starting {
		b = append(b, `,"starting":true`...)
	}
	b = append(b, `,"busy":`...)
	b = strconv.AppendInt(b, int64(e.Busy), 10)
	b = append(b, `,"retain":`...)
	b = strconv.AppendInt(b, int64(e.Retain), 10)
	b = appendIDs(b, `,"providers":`, e.Providers)
	b = appendIDs(b, `,"clients":`, e.Clients)
	b = appendIDs(b, `,"open_by":`, e.OpenBy)
	if len(e.Properties) > 0 {
		b = append(b, `,"properties":{`...)
		keys := make([]string, 0, len(e.Properties))
		for k := range e.Properties {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonscan.AppendString(b, k)
			b = append(b, ':')
			b = appendJSONValue(b, e.Properties[k])
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func appendIDs(b []byte, key string, ids []uint64) []byte {
	if len(ids) == 0 {
		return b
	}
	b = append(b, key...)
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, id, 10)
	}
	return append(b, ']')
}

// appendJSONValue writes the property types drivers use directly and
// hands anything else (floats, slices, maps) to encoding/json.
func appendJSONValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case string:
		return jsonscan.AppendString(b, v)
	case bool:
		return strconv.AppendBool(b, v)
	case int:
		return strconv.AppendInt(b, int64(v), 10)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case int32:
		return strconv.AppendInt(b, int64(v), 10)
	case uint64:
		return strconv.AppendUint(b, v, 10)
	case uint32:
		return strconv.AppendUint(b, uint64(v), 10)
	case uint16:
		return strconv.AppendUint(b, uint64(v), 10)
	case uint8:
		return strconv.AppendUint(b, uint64(v), 10)
	case nil:
		return append(b, "null"...)
	}
	j, err := json.Marshal(v)
	if err != nil {
		// What json.Marshal of the whole entry would have refused; a
		// property is never one of those (NewProperties keeps plain data).
		return jsonscan.AppendString(b, "!"+err.Error())
	}
	return append(b, j...)
}
