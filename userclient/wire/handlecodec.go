package wire

import (
	"encoding/json"
	"strconv"

	"github.com/drvkit/drvkit/internal/jsonscan"
)

// AppendHandleMsg appends the control payload of a call or close frame,
//
//	{"handle":N[,"method":"S"]}
//
// to b without reflection: every call pays for it, twice (the client
// encodes it, the server decodes it). The output is what json.Marshal
// gives for m, except that a method name needing escapes is escaped by
// encoding/json without its HTML escaping; both decode the same.
func AppendHandleMsg(b []byte, m HandleMsg) []byte {
	b = append(b, `{"handle":`...)
	b = strconv.AppendUint(b, m.Handle, 10)
	if m.Method != "" {
		b = append(b, `,"method":`...)
		b = jsonscan.AppendString(b, m.Method)
	}
	return append(b, '}')
}

// DecodeHandleMsg decodes a call or close frame's control payload.
// AppendHandleMsg's shape is parsed without reflection; anything else
// (escapes, non-ASCII text, other key orders, whitespace, another
// client's encoder) goes to encoding/json, so the result is always what
// json.Unmarshal gives (FuzzDecodeHandleMsg checks it). lastMethod, when
// it equals the decoded method, is returned instead of a new string: a
// stream of calls of one method costs no allocation for its name.
func DecodeHandleMsg(b []byte, lastMethod string) (HandleMsg, error) {
	if m, ok := parseHandleMsg(b, lastMethod); ok {
		return m, nil
	}
	var m HandleMsg
	err := json.Unmarshal(b, &m)
	return m, err
}

// parseHandleMsg is the fast path; ok is false for anything that is not
// exactly AppendHandleMsg's shape.
func parseHandleMsg(b []byte, lastMethod string) (m HandleMsg, ok bool) {
	p := jsonscan.Scanner{B: b}
	if !p.Lit(`{"handle":`) {
		return m, false
	}
	if m.Handle, ok = p.Uint(); !ok {
		return m, false
	}
	if p.Lit(`,"method":`) {
		s, ok := p.Str()
		if !ok {
			return m, false
		}
		if string(s) == lastMethod {
			m.Method = lastMethod
		} else {
			m.Method = string(s)
		}
	}
	return m, p.Lit("}") && p.I == len(p.B)
}
