// Golden wire vectors for Waypost's gossip codec, made and checked by the real memberlist code.
//
// A dev tool, not part of Waypost: run.sh copies memberlist's non-test sources into a temporary
// GOPATH, adds this file to the package (to reach its unexported encoders), and runs
//   TestGoldenGenerate: writes $GOLDEN_DIR/go_vectors.json, bytes memberlist itself produced;
//   TestGoldenCheck:    reads $GOLDEN_DIR/py_vectors.json (Waypost's bytes), decodes each with
//                       memberlist's own readers, writes $GOLDEN_DIR/go_check.json.
package memberlist

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io/ioutil"
	"log"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

type goldenMsg struct {
	Type   string      `json:"type"`
	Fields interface{} `json:"fields"`
}

type goldenVector struct {
	Name      string          `json:"name"`
	Kind      string          `json:"kind"` // message, packet or stream
	Hex       string          `json:"hex"`
	Key       []byte          `json:"key,omitempty"`
	Options   json.RawMessage `json:"options,omitempty"`
	Truncated int             `json:"truncated"`
	Expect    []goldenMsg     `json:"expect"`
}

type goldenPushPull struct {
	Join      bool
	Nodes     []pushNodeState
	UserState []byte
}

type goldenUser struct{ Payload []byte }

// goldenConn is a net.Conn over two buffers: what memberlist reads, what it writes.
type goldenConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *goldenConn) Read(b []byte) (int, error)         { return c.in.Read(b) }
func (c *goldenConn) Write(b []byte) (int, error)        { return c.out.Write(b) }
func (c *goldenConn) Close() error                       { return nil }
func (c *goldenConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *goldenConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }
func (c *goldenConn) SetDeadline(t time.Time) error      { return nil }
func (c *goldenConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *goldenConn) SetWriteDeadline(t time.Time) error { return nil }

// goldenTransport captures what memberlist sends; other Transport methods are never called.
type goldenTransport struct {
	NodeAwareTransport
	packets [][]byte
	conn    *goldenConn
}

func (t *goldenTransport) WriteToAddress(b []byte, a Address) (time.Time, error) {
	t.packets = append(t.packets, append([]byte(nil), b...))
	return time.Time{}, nil
}

func (t *goldenTransport) DialAddressTimeout(a Address, d time.Duration) (net.Conn, error) {
	return t.conn, nil
}

type goldenDelegate struct {
	state    []byte
	received [][]byte
}

func (d *goldenDelegate) NodeMeta(limit int) []byte                  { return nil }
func (d *goldenDelegate) NotifyMsg(b []byte)                         { d.received = append(d.received, append([]byte(nil), b...)) }
func (d *goldenDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *goldenDelegate) LocalState(join bool) []byte                { return d.state }
func (d *goldenDelegate) MergeRemoteState(buf []byte, join bool)     {}

func goldenMemberlist(protocol uint8, compress bool, key []byte) (*Memberlist, *goldenTransport) {
	conf := DefaultLANConfig()
	conf.ProtocolVersion = protocol
	conf.EnableCompression = compress
	if key != nil {
		ring, err := NewKeyring(nil, key)
		if err != nil {
			panic(err)
		}
		conf.Keyring = ring
	}
	tr := &goldenTransport{conn: &goldenConn{in: bytes.NewReader(nil)}}
	m := &Memberlist{config: conf, transport: tr, logger: log.New(ioutil.Discard, "", 0), nodeMap: map[string]*nodeState{}}
	return m, tr
}

func goldenKey(n int) []byte {
	key := make([]byte, n)
	for i := range key {
		key[i] = byte(i*7 + n)
	}
	return key
}

func mustEncode(t messageType, v interface{}) []byte {
	buf, err := encode(t, v)
	if err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func TestGoldenGenerate(t *testing.T) {
	v4 := net.ParseIP("10.0.0.5").To4()
	v6 := net.ParseIP("fd00::1:2").To16()
	long := bytes.Repeat([]byte("tag=value;"), 30)
	messages := []struct {
		name string
		typ  messageType
		kind string
		v    interface{}
	}{
		{"ping_plain", pingMsg, "ping", &ping{SeqNo: 7, Node: "node-b"}},
		{"ping_source", pingMsg, "ping", &ping{SeqNo: 4294967295, Node: "consul-server-1", SourceAddr: v4, SourcePort: 8301, SourceNode: "client-9"}},
		{"indirect_ping_nack", indirectPingMsg, "indirect_ping", &indirectPingReq{SeqNo: 300, Target: v6, Port: 65535, Node: "target", Nack: true, SourceAddr: v4, SourcePort: 128, SourceNode: "me"}},
		{"indirect_ping_plain", indirectPingMsg, "indirect_ping", &indirectPingReq{SeqNo: 127, Target: v4, Port: 255, Node: "t"}},
		{"ack_payload", ackRespMsg, "ack", &ackResp{SeqNo: 128, Payload: long[:40]}},
		{"ack_nil", ackRespMsg, "ack", &ackResp{SeqNo: 0}},
		{"nack", nackRespMsg, "nack", &nackResp{SeqNo: 65536}},
		{"err", errMsg, "err", &errResp{Error: "remote error: nope"}},
		{"suspect", suspectMsg, "suspect", &suspect{Incarnation: 2, Node: "a", From: "b"}},
		{"alive_full", aliveMsg, "alive", &alive{Incarnation: 1<<31 + 5, Node: "a-rather-long-node-name-for-str16-0123456789", Addr: v4, Port: 8301, Meta: long, Vsn: []uint8{1, 5, 2, 2, 5, 4}}},
		{"alive_nil", aliveMsg, "alive", &alive{Incarnation: 1, Node: "n\u00f6d\u00e9-\u03c0", Addr: v6, Port: 1}},
		{"dead", deadMsg, "dead", &dead{Incarnation: 9, Node: "gone", From: "gone"}},
	}
	var out []goldenVector
	var encoded [][]byte
	for _, m := range messages {
		b := mustEncode(m.typ, m.v)
		encoded = append(encoded, b)
		out = append(out, goldenVector{Name: m.name, Kind: "message", Hex: hex.EncodeToString(b), Expect: []goldenMsg{{m.kind, m.v}}})
	}
	user := append([]byte{byte(userMsg)}, []byte("serf-event-payload")...)
	out = append(out, goldenVector{Name: "user", Kind: "message", Hex: hex.EncodeToString(user), Expect: []goldenMsg{{"user", goldenUser{[]byte("serf-event-payload")}}}})

	// Packets, through rawSendMsgPacket: compound, compression, CRC, encryption.
	three := [][]byte{encoded[0], encoded[8], user}
	expectThree := []goldenMsg{out[0].Expect[0], out[8].Expect[0], out[12].Expect[0]}
	repeated := [][]byte{encoded[9], encoded[9], encoded[9], encoded[8]}
	expectRepeated := []goldenMsg{out[9].Expect[0], out[9].Expect[0], out[9].Expect[0], out[8].Expect[0]}
	proto5 := &Node{PMax: 5}
	packets := []struct {
		name     string
		protocol uint8
		compress bool
		key      []byte
		node     *Node
		msgs     [][]byte
		expect   []goldenMsg
	}{
		{"packet_single", 2, false, nil, nil, [][]byte{encoded[1]}, []goldenMsg{out[1].Expect[0]}},
		{"packet_compound", 2, false, nil, nil, three, expectThree},
		{"packet_crc", 2, false, nil, proto5, three, expectThree},
		{"packet_compress", 2, true, nil, nil, repeated, expectRepeated},
		{"packet_compress_crc", 2, true, nil, proto5, repeated, expectRepeated},
		{"packet_encrypt_v1_key16", 2, false, goldenKey(16), nil, three, expectThree},
		{"packet_encrypt_v0_key24", 1, false, goldenKey(24), nil, three, expectThree},
		{"packet_all_v1_key32", 5, true, goldenKey(32), proto5, repeated, expectRepeated},
	}
	for _, p := range packets {
		m, tr := goldenMemberlist(p.protocol, p.compress, p.key)
		msg := p.msgs[0]
		if len(p.msgs) > 1 {
			msg = makeCompoundMessage(p.msgs).Bytes()
		}
		if err := m.rawSendMsgPacket(Address{Addr: "127.0.0.1:8301", Name: "x"}, p.node, msg); err != nil {
			t.Fatal(err)
		}
		opts, _ := json.Marshal(map[string]interface{}{"protocol": p.protocol, "compress": p.compress, "crc": p.node != nil})
		out = append(out, goldenVector{Name: p.name, Kind: "packet", Hex: hex.EncodeToString(tr.packets[0]), Key: p.key, Options: opts, Expect: p.expect})
	}
	cut := makeCompoundMessage(three).Bytes()
	out = append(out, goldenVector{Name: "packet_compound_truncated", Kind: "packet", Hex: hex.EncodeToString(cut[:len(cut)-3]), Truncated: 1, Expect: expectThree[:2]})

	// Streams, through sendLocalState / sendUserMsg / rawSendMsgStream / handleConn.
	nodes := []*nodeState{
		{Node: Node{Name: "server-1", Addr: v4, Port: 8301, Meta: long[:60], PMin: 1, PMax: 5, PCur: 2, DMin: 2, DMax: 5, DCur: 4}, Incarnation: 3, State: StateAlive},
		{Node: Node{Name: "client-2", Addr: v6, Port: 18301, PMin: 1, PMax: 5, PCur: 2, DMin: 2, DMax: 5, DCur: 4}, Incarnation: 1 << 20, State: StateSuspect},
		{Node: Node{Name: "gone-3", Addr: v4, Port: 8301, PMin: 1, PMax: 5, PCur: 2, DMin: 2, DMax: 5, DCur: 4}, Incarnation: 0, State: StateLeft},
	}
	var pushed []pushNodeState
	for _, n := range nodes {
		pushed = append(pushed, pushNodeState{Name: n.Name, Addr: n.Addr, Port: n.Port, Meta: n.Meta, Incarnation: n.Incarnation, State: n.State, Vsn: []uint8{n.PMin, n.PMax, n.PCur, n.DMin, n.DMax, n.DCur}})
	}
	streams := []struct {
		name     string
		protocol uint8
		compress bool
		key      []byte
		send     func(m *Memberlist, tr *goldenTransport) error
		expect   goldenMsg
	}{
		{"stream_push_pull", 2, false, nil, func(m *Memberlist, tr *goldenTransport) error {
			m.nodes, m.config.Delegate = nodes, &goldenDelegate{state: []byte("serf-user-state")}
			return m.sendLocalState(tr.conn, true)
		}, goldenMsg{"push_pull", goldenPushPull{true, pushed, []byte("serf-user-state")}}},
		{"stream_push_pull_empty", 2, false, nil, func(m *Memberlist, tr *goldenTransport) error {
			return m.sendLocalState(tr.conn, false)
		}, goldenMsg{"push_pull", goldenPushPull{false, nil, nil}}},
		{"stream_push_pull_compress_v1", 2, true, goldenKey(32), func(m *Memberlist, tr *goldenTransport) error {
			m.nodes, m.config.Delegate = nodes, &goldenDelegate{state: long}
			return m.sendLocalState(tr.conn, false)
		}, goldenMsg{"push_pull", goldenPushPull{false, pushed, long}}},
		{"stream_push_pull_v0", 1, false, goldenKey(16), func(m *Memberlist, tr *goldenTransport) error {
			m.nodes = nodes[:1]
			return m.sendLocalState(tr.conn, true)
		}, goldenMsg{"push_pull", goldenPushPull{true, pushed[:1], nil}}},
		{"stream_user", 2, false, nil, func(m *Memberlist, tr *goldenTransport) error {
			return m.sendUserMsg(Address{Addr: "127.0.0.1:8301", Name: "x"}, long[:45])
		}, goldenMsg{"user", goldenUser{long[:45]}}},
		{"stream_user_compress", 2, true, nil, func(m *Memberlist, tr *goldenTransport) error {
			return m.sendUserMsg(Address{Addr: "127.0.0.1:8301", Name: "x"}, long)
		}, goldenMsg{"user", goldenUser{long}}},
		{"stream_ping", 2, false, nil, func(m *Memberlist, tr *goldenTransport) error {
			return m.rawSendMsgStream(tr.conn, mustEncode(pingMsg, messages[1].v))
		}, goldenMsg{"ping", messages[1].v}},
		{"stream_err", 2, false, nil, func(m *Memberlist, tr *goldenTransport) error {
			tr.conn.in = bytes.NewReader([]byte{byte(encryptMsg), 0, 0, 0, 1, 0})
			m.handleConn(tr.conn)
			return nil
		}, goldenMsg{"err", &errResp{Error: "Remote state is encrypted and encryption is not configured"}}},
	}
	for _, s := range streams {
		m, tr := goldenMemberlist(s.protocol, s.compress, s.key)
		if err := s.send(m, tr); err != nil {
			t.Fatal(err)
		}
		opts, _ := json.Marshal(map[string]interface{}{"protocol": s.protocol, "compress": s.compress})
		out = append(out, goldenVector{Name: s.name, Kind: "stream", Hex: hex.EncodeToString(tr.conn.out.Bytes()), Key: s.key, Options: opts, Expect: []goldenMsg{s.expect}})
	}
	writeGolden(t, "go_vectors.json", out)
}

// goldenDecodeCommand mirrors handleCommand's dispatch, using memberlist's own decoders.
func goldenDecodeCommand(buf []byte, truncated *int) ([]goldenMsg, error) {
	if len(buf) == 0 {
		return nil, fmt.Errorf("empty message")
	}
	body := buf[1:]
	var v interface{}
	name := ""
	switch messageType(buf[0]) {
	case compoundMsg:
		trunc, parts, err := decodeCompoundMessage(body)
		if err != nil {
			return nil, err
		}
		*truncated += trunc
		var all []goldenMsg
		for _, part := range parts {
			msgs, err := goldenDecodeCommand(part, truncated)
			if err != nil {
				return nil, err
			}
			all = append(all, msgs...)
		}
		return all, nil
	case compressMsg:
		payload, err := decompressPayload(body)
		if err != nil {
			return nil, err
		}
		return goldenDecodeCommand(payload, truncated)
	case userMsg:
		return []goldenMsg{{"user", goldenUser{body}}}, nil
	case pingMsg:
		name, v = "ping", &ping{}
	case indirectPingMsg:
		name, v = "indirect_ping", &indirectPingReq{}
	case ackRespMsg:
		name, v = "ack", &ackResp{}
	case nackRespMsg:
		name, v = "nack", &nackResp{}
	case errMsg:
		name, v = "err", &errResp{}
	case suspectMsg:
		name, v = "suspect", &suspect{}
	case aliveMsg:
		name, v = "alive", &alive{}
	case deadMsg:
		name, v = "dead", &dead{}
	default:
		return nil, fmt.Errorf("unsupported type %d", buf[0])
	}
	if err := decode(body, v); err != nil {
		return nil, err
	}
	return []goldenMsg{{name, v}}, nil
}

// goldenReadPacket mirrors ingestPacket: decrypt, check the CRC, then dispatch.
func goldenReadPacket(buf, key []byte, truncated *int) ([]goldenMsg, error) {
	if key != nil {
		plain, err := decryptPayload([][]byte{key}, buf, nil)
		if err != nil {
			return nil, err
		}
		buf = plain
	}
	if len(buf) >= 5 && messageType(buf[0]) == hasCrcMsg {
		if crc32.ChecksumIEEE(buf[5:]) != binary.BigEndian.Uint32(buf[1:5]) {
			return nil, fmt.Errorf("invalid checksum")
		}
		buf = buf[5:]
	}
	return goldenDecodeCommand(buf, truncated)
}

// goldenReadStream reads one stream message with readStream and memberlist's stream readers.
func goldenReadStream(buf, key []byte) ([]goldenMsg, error) {
	m, tr := goldenMemberlist(2, false, key)
	tr.conn.in = bytes.NewReader(buf)
	msgType, bufConn, dec, err := m.readStream(tr.conn)
	if err != nil {
		return nil, err
	}
	switch msgType {
	case pushPullMsg:
		join, nodes, state, err := m.readRemoteState(bufConn, dec)
		if err != nil {
			return nil, err
		}
		return []goldenMsg{{"push_pull", goldenPushPull{join, nodes, state}}}, nil
	case userMsg:
		d := &goldenDelegate{}
		m.config.Delegate = d
		if err := m.readUserMsg(bufConn, dec); err != nil {
			return nil, err
		}
		if len(d.received) != 1 {
			return nil, fmt.Errorf("delegate got %d messages", len(d.received))
		}
		return []goldenMsg{{"user", goldenUser{d.received[0]}}}, nil
	case pingMsg, ackRespMsg, errMsg:
		names := map[messageType]string{pingMsg: "ping", ackRespMsg: "ack", errMsg: "err"}
		values := map[messageType]interface{}{pingMsg: &ping{}, ackRespMsg: &ackResp{}, errMsg: &errResp{}}
		if err := dec.Decode(values[msgType]); err != nil {
			return nil, err
		}
		return []goldenMsg{{names[msgType], values[msgType]}}, nil
	}
	return nil, fmt.Errorf("unexpected stream type %d", msgType)
}

type goldenResult struct {
	Name      string      `json:"name"`
	Hex       string      `json:"hex"`
	OK        bool        `json:"ok"`
	Error     string      `json:"error,omitempty"`
	Truncated int         `json:"truncated"`
	Decoded   []goldenMsg `json:"decoded"`
}

func TestGoldenCheck(t *testing.T) {
	raw, err := ioutil.ReadFile(filepath.Join(os.Getenv("GOLDEN_DIR"), "py_vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Vectors []goldenVector }
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var results []goldenResult
	for _, v := range doc.Vectors {
		buf, err := hex.DecodeString(v.Hex)
		if err != nil {
			t.Fatal(err)
		}
		res := goldenResult{Name: v.Name, Hex: v.Hex}
		func() {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			switch v.Kind {
			case "message", "packet":
				res.Decoded, err = goldenReadPacket(buf, v.Key, &res.Truncated)
			case "stream":
				res.Decoded, err = goldenReadStream(buf, v.Key)
			default:
				err = fmt.Errorf("unknown kind %q", v.Kind)
			}
		}()
		res.OK = err == nil
		if err != nil {
			res.Error = err.Error()
		}
		results = append(results, res)
	}
	writeGolden(t, "go_check.json", results)
}

func writeGolden(t *testing.T, name string, vectors interface{}) {
	doc := map[string]interface{}{
		"generator": "scripts/gossip/golden (memberlist 0.2.2, go-msgpack 0.5.5, Debian sources)",
		"go":        runtime.Version(),
		"vectors":   vectors,
	}
	raw, err := json.MarshalIndent(doc, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := ioutil.WriteFile(filepath.Join(os.Getenv("GOLDEN_DIR"), name), append(raw, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
