// Dev tool: golden vectors for Waypost's Serf codec, written by the Debian serf 0.9.4 sources.
//
// run.sh links serf's own package files next to this file (package serf), so the unexported
// message structs and encodeMessage/decodeMessage used here are Serf's, not copies.
//   SERF_GOLDEN_MODE=encode  SERF_GOLDEN_OUT=f.json  -> {name: {kind, hex}} Serf wrote
//   SERF_GOLDEN_MODE=decode  SERF_GOLDEN_IN=in.json SERF_GOLDEN_OUT=f.json
//       -> for each {name: {kind, hex}} in: Serf decodes it and encodes it again.
package serf

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/codec"
)

type vector struct {
	Kind string `json:"kind"`
	Hex  string `json:"hex"`
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func encodeVectors() map[string]vector {
	out := map[string]vector{}
	add := func(name, kind string, b []byte) { out[name] = vector{kind, hex.EncodeToString(b)} }
	s4 := &Serf{config: &Config{ProtocolVersion: 4}}
	s2 := &Serf{config: &Config{ProtocolVersion: 2}}

	add("join_small", "message", must(encodeMessage(messageJoinType, &messageJoin{LTime: 5, Node: "a"})))
	add("join_big", "message", must(encodeMessage(messageJoinType, &messageJoin{LTime: 1 << 40, Node: "a-node-name-that-is-longer-than-31-bytes"})))
	add("leave_prune", "message", must(encodeMessage(messageLeaveType, &messageLeave{LTime: 300, Node: "b", Prune: true})))
	add("leave", "message", must(encodeMessage(messageLeaveType, &messageLeave{LTime: 70000, Node: "node-1"})))
	add("push_pull", "message", must(encodeMessage(messagePushPullType, &messagePushPull{
		LTime: 10, StatusLTimes: map[string]LamportTime{"a": 3}, LeftMembers: []string{"b"},
		EventLTime: 7,
		Events: []*userEvents{nil, {LTime: 1, Events: []userEvent{{Name: "deploy", Payload: []byte("x")}, {Name: "nop"}}}, nil},
		QueryLTime: 2})))
	add("push_pull_empty", "message", must(encodeMessage(messagePushPullType, &messagePushPull{
		LTime: 1, StatusLTimes: map[string]LamportTime{}, LeftMembers: []string{},
		EventLTime: 1, Events: make([]*userEvents, 4), QueryLTime: 1})))
	add("user_event", "message", must(encodeMessage(messageUserEventType, &messageUserEvent{LTime: 9, Name: "consul:event", Payload: []byte{0, 1, 2, 255}, CC: true})))
	add("user_event_nil_payload", "message", must(encodeMessage(messageUserEventType, &messageUserEvent{LTime: 0, Name: "e"})))
	nodeFilter := must(encodeFilter(filterNodeType, filterNode{"a", "b"}))
	tagFilter := must(encodeFilter(filterTagType, &filterTag{Tag: "role", Expr: "^node$"}))
	add("filter_node", "filter", nodeFilter)
	add("filter_tag", "filter", tagFilter)
	add("query", "message", must(encodeMessage(messageQueryType, &messageQuery{
		LTime: 4, ID: 123456789, Addr: net.IP{127, 0, 0, 1}, Port: 8301, SourceNode: "src",
		Filters: [][]byte{nodeFilter, tagFilter}, Flags: queryFlagAck, RelayFactor: 2,
		Timeout: 3200 * time.Millisecond, Name: "_serf_ping", Payload: []byte("hello")})))
	add("query_minimal", "message", must(encodeMessage(messageQueryType, &messageQuery{
		LTime: 1, ID: 1, Addr: net.ParseIP("::1"), Port: 1, SourceNode: "s", Name: "q",
		Flags: queryFlagNoBroadcast})))
	resp := messageQueryResponse{LTime: 4, ID: 123456789, From: "responder", Flags: queryFlagAck}
	add("query_ack", "message", must(encodeMessage(messageQueryResponseType, &resp)))
	add("query_response", "message", must(encodeMessage(messageQueryResponseType, &messageQueryResponse{LTime: 4, ID: 4294967295, From: "r", Payload: []byte("answer")})))
	add("relay", "message", must(encodeRelayMessage(messageQueryResponseType, net.UDPAddr{IP: net.IP{10, 0, 0, 2}, Port: 8301}, "dest", &resp)))
	key := bytes.Repeat([]byte{7}, 32)
	add("key_request", "message", must(encodeMessage(messageKeyRequestType, &keyRequest{Key: key})))
	add("key_response", "message", must(encodeMessage(messageKeyResponseType, &nodeKeyResponse{Result: true, Keys: []string{"AAAA", "BBBB"}, PrimaryKey: "AAAA"})))
	add("key_response_error", "message", must(encodeMessage(messageKeyResponseType, &nodeKeyResponse{Message: "No keyring to modify (encryption not enabled)"})))
	add("conflict_response", "message", must(encodeMessage(messageConflictResponseType, &Member{
		Name: "n1", Addr: net.IP{192, 168, 1, 2}, Port: 8301, Tags: map[string]string{"role": "node"},
		Status: StatusAlive, ProtocolMin: 1, ProtocolMax: 5, ProtocolCur: 2, DelegateMin: 2, DelegateMax: 5, DelegateCur: 4})))
	var nobody *Member
	add("conflict_response_unknown", "message", must(encodeMessage(messageConflictResponseType, nobody)))
	add("tags_v4", "tags4", s4.encodeTags(map[string]string{"role": "node"}))
	add("tags_v4_empty", "tags4", s4.encodeTags(map[string]string{}))
	add("tags_v2_role", "tags2", s2.encodeTags(map[string]string{"role": "consul", "dc": "dc1"}))
	return out
}

func reencode(kind string, raw []byte) ([]byte, error) {
	switch kind {
	case "tags4", "tags2":
		s := &Serf{config: &Config{ProtocolVersion: 4}, logger: nil}
		if kind == "tags2" {
			s.config.ProtocolVersion = 2
		}
		return s.encodeTags(decodeTagsStrict(raw)), nil
	case "filter":
		switch filterType(raw[0]) {
		case filterNodeType:
			var f filterNode
			if err := decodeMessage(raw[1:], &f); err != nil {
				return nil, err
			}
			return encodeFilter(filterNodeType, f)
		case filterTagType:
			var f filterTag
			if err := decodeMessage(raw[1:], &f); err != nil {
				return nil, err
			}
			return encodeFilter(filterTagType, &f)
		}
		return nil, fmt.Errorf("bad filter type")
	}
	t := messageType(raw[0])
	var v interface{}
	switch t {
	case messageJoinType:
		v = &messageJoin{}
	case messageLeaveType:
		v = &messageLeave{}
	case messagePushPullType:
		v = &messagePushPull{}
	case messageUserEventType:
		v = &messageUserEvent{}
	case messageQueryType:
		v = &messageQuery{}
	case messageQueryResponseType:
		v = &messageQueryResponse{}
	case messageKeyRequestType:
		v = &keyRequest{}
	case messageKeyResponseType:
		v = &nodeKeyResponse{}
	case messageConflictResponseType:
		var m *Member
		if err := decodeMessage(raw[1:], &m); err != nil {
			return nil, err
		}
		return encodeMessage(t, m)
	case messageRelayType:
		var header relayHeader
		var handle codec.MsgpackHandle
		reader := bytes.NewReader(raw[1:])
		if err := codec.NewDecoder(reader, &handle).Decode(&header); err != nil {
			return nil, err
		}
		inner := make([]byte, reader.Len())
		reader.Read(inner)
		var resp messageQueryResponse
		if err := decodeMessage(inner[1:], &resp); err != nil {
			return nil, err
		}
		return encodeRelayMessage(messageType(inner[0]), header.DestAddr, header.DestName, &resp)
	default:
		return nil, fmt.Errorf("unknown type %d", t)
	}
	if err := decodeMessage(raw[1:], v); err != nil {
		return nil, err
	}
	return encodeMessage(t, v)
}

// decodeTagsStrict is Serf's decodeTags without the logger (a nil logger would panic on error).
func decodeTagsStrict(buf []byte) map[string]string {
	tags := make(map[string]string)
	if len(buf) == 0 || buf[0] != tagMagicByte {
		tags["role"] = string(buf)
		return tags
	}
	if err := codec.NewDecoder(bytes.NewReader(buf[1:]), &codec.MsgpackHandle{}).Decode(&tags); err != nil {
		panic(err)
	}
	return tags
}

func TestGolden(t *testing.T) {
	var out map[string]vector
	switch os.Getenv("SERF_GOLDEN_MODE") {
	case "encode":
		out = encodeVectors()
	case "decode":
		data, err := os.ReadFile(os.Getenv("SERF_GOLDEN_IN"))
		if err != nil {
			t.Fatal(err)
		}
		var in map[string]vector
		if err := json.Unmarshal(data, &in); err != nil {
			t.Fatal(err)
		}
		out = map[string]vector{}
		for name, v := range in {
			raw, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			again, err := reencode(v.Kind, raw)
			if err != nil {
				out[name] = vector{v.Kind, "error: " + err.Error()}
				continue
			}
			out[name] = vector{v.Kind, hex.EncodeToString(again)}
		}
	default:
		t.Skip("set SERF_GOLDEN_MODE")
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv("SERF_GOLDEN_OUT"), append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
