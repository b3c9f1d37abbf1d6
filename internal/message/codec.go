package message

import gojson "github.com/goccy/go-json"

// Encode is a message's stored form: its JSON, the same JSON encoding/json
// writes (codec_test.go holds the two to it both ways; the bytes may differ
// in escapes), written by goccy/go-json.
// Every store write and every read before a callback goes through the pair,
// and encoding/json's decoder was the largest single cost of a distributed
// fire (18 µs to decode one message on a quiet 2-core box, against 2.7 µs
// here; encoding 2.8 against 1.4). The HTTP API keeps encoding/json: its
// strict decoding and its error texts are part of the API.
//
// Callers wrap its errors (and Decode's) with their own context.
func Encode(m *Message) ([]byte, error) { return gojson.Marshal(m) }

// Decode reads a stored message (Encode's output, or an older
// encoding/json one: the same JSON) into m. It does not keep b: goccy
// decodes from its own copy.
func Decode(b []byte, m *Message) error { return gojson.Unmarshal(b, m) }
