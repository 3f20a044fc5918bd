package wire

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
)

// The messages of a client method call take the fast path both ways, and
// read back as sent.
func TestFastCodec(t *testing.T) {
	for _, tc := range []struct {
		m    *Message
		want string
	}{
		{&Message{Type: TypeCall, ID: 7, Method: "echo", Data: []byte("hi")}, `{"type":"call","id":7,"method":"echo","data":"aGk="}`},
		{&Message{Type: TypeCall, ID: 8, Method: "count"}, `{"type":"call","id":8,"method":"count"}`},
		{&Message{Type: TypeResult, ID: 7, Data: []byte("hi")}, `{"type":"result","id":7,"data":"aGk="}`},
		{&Message{Type: TypeResult, ID: 18446744073709551615}, `{"type":"result","id":18446744073709551615}`},
	} {
		b, err := Encode(tc.m, 0)
		require.NoError(t, err)
		require.Equal(t, tc.want, string(b))
		viaJSON, err := json.Marshal(tc.m)
		require.NoError(t, err)
		require.JSONEq(t, string(viaJSON), string(b), "the same message as encoding/json's")
		m, ok := decodeFast(b)
		require.True(t, ok, "decoded by the fast path")
		require.Equal(t, tc.m, m)
		m, err = Decode(b, 0)
		require.NoError(t, err)
		require.Equal(t, tc.m, m)
	}
	// Not the fast path's: other messages, other fields, other shapes.
	require.Nil(t, encodeFast(&Message{Type: TypeResult, ID: 7, Text: "x"}))
	require.Nil(t, encodeFast(&Message{Type: TypeError, ID: 7, Code: CodeFailed}))
	for _, b := range []string{
		`{"id":7,"type":"result"}`, `{"type": "result","id":7}`, `{"type":"result","id":07}`,
		`{"type":"result","id":7,"method":"x"}`, `{"type":"call","id":7,"method":"e\u0063ho"}`,
		`{"type":"result","id":7,"data":"aGk"}`, `{"type":"result","id":7} `, `{"type":"result","id":-7}`,
	} {
		_, ok := decodeFast([]byte(b))
		require.False(t, ok, b)
	}
}

// FuzzFastDecode: whatever the fast path accepts, encoding/json decodes to
// the very same message (seeds: testdata/*.json and calls and results in
// both encoders' shapes).
func FuzzFastDecode(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*.json")
	require.NoError(f, err)
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte(`{"type":"call","id":7,"method":"echo","data":"aGk="}`))
	f.Add([]byte(`{"type":"result","id":7,"data":""}`))
	f.Add([]byte(`{"type": "result", "id": 7, "data": "aGk="}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := decodeFast(b)
		if !ok {
			return
		}
		var want Message
		require.NoError(t, json.Unmarshal(b, &want), "the fast path accepted what encoding/json refuses")
		require.Equal(t, &want, m)
	})
}

// FuzzFastEncode: what encodeFast writes for any call or result decodes,
// with encoding/json and with the fast path, to what encoding/json's own
// encoding of the message decodes to.
func FuzzFastEncode(f *testing.F) {
	f.Add(uint64(7), "echo", []byte("hi"), true)
	f.Add(uint64(1), "", []byte{}, false)
	f.Add(uint64(9), "a\"b\\c\x01<é\xff", []byte{0, 255}, true)
	f.Fuzz(func(t *testing.T, id uint64, method string, data []byte, call bool) {
		m := &Message{Type: TypeResult, ID: id, Data: data}
		if call {
			m.Type, m.Method = TypeCall, method
		}
		b := encodeFast(m)
		if id == 0 {
			require.Nil(t, b, "an id of 0 is not a call's")
			return
		}
		jb, err := json.Marshal(m)
		require.NoError(t, err)
		var want, got Message
		require.NoError(t, json.Unmarshal(jb, &want))
		require.NoError(t, json.Unmarshal(b, &got))
		require.Equal(t, want, got)
		if fast, ok := decodeFast(b); ok {
			require.Equal(t, &want, fast)
		}
	})
}

// Every field of Message but a call's and a result's keeps a message off
// the fast path: a field added to Message and not to onlyCallFields would
// be dropped from the calls and results that set it.
func TestOnlyCallFields(t *testing.T) {
	typ := reflect.TypeOf(Message{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		m := &Message{Type: TypeResult, ID: 1, Method: "m", Data: []byte("d")}
		require.True(t, onlyCallFields(m))
		switch f.Name {
		case "Type", "ID", "Method", "Data":
			continue
		}
		v := reflect.ValueOf(m).Elem().Field(i)
		switch v.Kind() {
		case reflect.String:
			v.SetString("x")
		case reflect.Bool:
			v.SetBool(true)
		case reflect.Int, reflect.Int64:
			v.SetInt(1)
		case reflect.Uint32, reflect.Uint64:
			v.SetUint(1)
		case reflect.Pointer:
			v.Set(reflect.New(f.Type.Elem()))
		case reflect.Slice:
			v.Set(reflect.MakeSlice(f.Type, 1, 1))
		default:
			t.Fatalf("field %s of kind %s: teach this test to set it", f.Name, v.Kind())
		}
		require.False(t, onlyCallFields(m), "field %s set, yet the fast path would encode the message without it", f.Name)
		require.Nil(t, encodeFast(m), f.Name)
	}
}
