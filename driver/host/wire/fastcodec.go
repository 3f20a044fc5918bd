package wire

import (
	"encoding/base64"
	"strconv"

	"github.com/drvkit/drvkit/internal/jsonscan"
)

// A client method call through a bundle is a call message one way and a
// result the other, each encoded once and decoded once: with encoding/json
// that was about 1 µs to encode and 2 µs and seven allocations to decode,
// per message. Those two shapes are written and read here without
// reflection; every other message, and any call or result in another
// shape (another key order, whitespace, escapes — another language's
// encoder), goes through encoding/json, and the result is always the one
// json.Unmarshal gives (FuzzFastDecode checks it).

// encodeFast returns m's JSON when m is a call or a result that carries
// only its id, method and data (the output json.Marshal gives, except that
// a method name needing escapes is escaped without HTML escaping: both
// decode the same); nil for any other message.
func encodeFast(m *Message) []byte {
	if (m.Type != TypeCall && m.Type != TypeResult) || m.ID == 0 || !onlyCallFields(m) {
		return nil
	}
	b := make([]byte, 0, len(`{"type":"result","id":18446744073709551615,"method":"","data":""}`)+
		len(m.Method)+base64.StdEncoding.EncodedLen(len(m.Data)))
	b = append(b, `{"type":"`...)
	b = append(b, m.Type...)
	b = append(b, `","id":`...)
	b = strconv.AppendUint(b, m.ID, 10)
	if m.Method != "" {
		b = append(b, `,"method":`...)
		b = jsonscan.AppendString(b, m.Method)
	}
	if len(m.Data) > 0 {
		b = append(b, `,"data":"`...)
		b = base64.StdEncoding.AppendEncode(b, m.Data)
		b = append(b, '"')
	}
	return append(b, '}')
}

// onlyCallFields reports whether m sets no field but Type, ID, Method and
// Data (TestOnlyCallFields fails when Message gets a field it misses).
func onlyCallFields(m *Message) bool {
	return m.Version == "" && m.MaxMessage == 0 && !m.Trace && m.Driver == "" && m.PID == 0 &&
		m.Personality == nil && m.Nub == nil && len(m.Files) == 0 && len(m.Providers) == 0 &&
		m.Msg == 0 && m.From == 0 && m.To == "" && m.Cause == "" && m.RootCause == "" &&
		m.Code == "" && m.Text == "" && m.Level == "" && m.Leaks == nil &&
		!m.Direct && m.Channel == 0 && m.Client == 0 && m.MaxFrame == 0 && m.MaxInflight == 0 && len(m.Methods) == 0
}

// decodeFast parses b if it is exactly encodeFast's shape of a call or a
// result; ok is false for anything else (encoding/json decides).
func decodeFast(b []byte) (m *Message, ok bool) {
	p := jsonscan.Scanner{B: b}
	var typ string
	switch {
	case p.Lit(`{"type":"call","id":`):
		typ = TypeCall
	case p.Lit(`{"type":"result","id":`):
		typ = TypeResult
	default:
		return nil, false
	}
	id, ok := p.Uint()
	if !ok {
		return nil, false
	}
	m = &Message{Type: typ, ID: id}
	if typ == TypeCall && p.Lit(`,"method":`) {
		s, ok := p.Str()
		if !ok {
			return nil, false
		}
		m.Method = string(s)
	}
	if p.Lit(`,"data":`) {
		s, ok := p.Str()
		if !ok {
			return nil, false
		}
		// As encoding/json decodes a []byte: a new slice, empty (not
		// nil) for "".
		data := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
		n, err := base64.StdEncoding.Decode(data, s)
		if err != nil {
			return nil, false
		}
		m.Data = data[:n]
	}
	if !p.Lit("}") || p.I != len(b) {
		return nil, false
	}
	return m, true
}
