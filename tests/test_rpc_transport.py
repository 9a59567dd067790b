"""The server port's framing (first byte, msgpack header + body, pipelining by Seq), junk input
that must never take the server down, and RemoteEndpoints' choice of servers."""

from __future__ import annotations

import random

import msgpack
import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import StringTransport

from agent.errors import InvalidRequest, NoLeader, NoServers
from agent.rpc import queries as q
from agent.rpc.options import QueryMeta, QueryOptions, ReadResult, WriteRequest, WriteResult
from agent.rpc.remote import EndpointsHandler, RemoteEndpoints, call_timeout
from agent.rpc.transport import (MAX_MESSAGE, RemoteError, RPCClientProtocol,
                                 RPCConnectionError, RPCServerProtocol)
from agent.rpc import wire
from agent.fsm.commands import KVOperation
from agent.structs import KVEntry


def pack(*objs) -> bytes:
    return b"".join(msgpack.packb(o, use_bin_type=True) for o in objs)


def answers(transport: StringTransport) -> list:
    return list(msgpack.Unpacker(__import__("io").BytesIO(transport.value()), raw=False))


def server(handler) -> tuple[RPCServerProtocol, StringTransport]:
    proto = RPCServerProtocol(handler)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def echo(method, body):
    return {"Method": method, "Body": body}


def test_a_call_is_answered_with_its_seq():
    proto, t = server(echo)
    proto.dataReceived(b"\x00" + pack({"ServiceMethod": "A.B", "Seq": 7}, {"X": 1}))
    assert answers(t) == [{"ServiceMethod": "A.B", "Seq": 7, "Error": ""},
                          {"Method": "A.B", "Body": {"X": 1}}]


def test_calls_are_pipelined_and_answered_out_of_order_byte_by_byte():
    later = Deferred()
    proto, t = server(lambda m, b: later if m == "Slow.Call" else echo(m, b))
    data = b"\x00" + pack({"ServiceMethod": "Slow.Call", "Seq": 1}, None,
                          {"ServiceMethod": "Fast.Call", "Seq": 2}, {})
    for i in range(len(data)):
        proto.dataReceived(data[i:i + 1])
    later.callback({"done": True})
    got = answers(t)
    assert [h["Seq"] for h in got[::2]] == [2, 1]
    assert got[3] == {"done": True}


def test_an_error_carries_consuls_text_and_its_kind():
    proto, t = server(lambda m, b: fail(NoLeader()))
    proto.dataReceived(b"\x00" + pack({"ServiceMethod": "KVS.Apply", "Seq": 1}, {}))
    header, body = answers(t)
    assert header["Error"] == "No cluster leader" and body == {"Kind": "NoLeader"}


@pytest.mark.parametrize("junk", [
    b"\x01raft please",  # Raft: not served yet
    b"\x16\x03\x01\x00",  # a TLS hello
    b"GET / HTTP/1.1\r\n\r\n",
    b"\x00\xc1\xc1\xc1",  # never-used msgpack bytes
    b"\x00" + pack(["not", "a", "header"]),
    b"\x00" + pack({"ServiceMethod": 5, "Seq": 1}),
    b"\x00" + pack({"ServiceMethod": "A.B", "Seq": "one"}),
    b"\x00" + pack({1: 2}),
])
def test_junk_closes_that_connection_only(junk):
    calls = []
    proto, t = server(lambda m, b: calls.append(m))
    proto.dataReceived(junk)
    proto.dataReceived(b"more junk after")
    assert t.disconnecting and not calls
    proto.connectionLost(None)


def test_a_message_beyond_the_limit_closes_the_connection():
    proto, t = server(echo)
    proto.dataReceived(b"\x00\xdb" + (MAX_MESSAGE + 10).to_bytes(4, "big"))
    assert not t.disconnecting  # waiting for the rest, within the limit
    proto.dataReceived(b"x" * (MAX_MESSAGE + 10))
    assert t.disconnecting


def test_a_body_the_endpoint_cannot_read_is_an_error_answer_not_a_crash():
    proto, t = server(EndpointsHandler(object()))
    proto.dataReceived(b"\x00" + pack({"ServiceMethod": "KVS.Get", "Seq": 1}, [1, 2],
                                      {"ServiceMethod": "Nope.Call", "Seq": 2}, {},
                                      {"ServiceMethod": "KVS.Nope", "Seq": 3}, {}))
    got = answers(t)
    assert got[0]["Error"].startswith("KVS.Get: expected dict") and got[1]["Kind"] == "WireError"
    assert got[2]["Error"] == "rpc: can't find service Nope.Call"
    assert got[4]["Error"] == "rpc: can't find method KVS.Nope"
    assert not t.disconnecting


def test_a_blocking_call_is_cancelled_when_its_client_goes():
    parked = Deferred()
    proto, t = server(lambda m, b: parked)
    proto.dataReceived(b"\x00" + pack({"ServiceMethod": "KVS.Get", "Seq": 1}, {}))
    proto.connectionLost(None)
    assert parked.called  # cancelled: the watch is dropped


# --- client side -----------------------------------------------------------------------------

def client():
    clock = task.Clock()
    proto = RPCClientProtocol(clock)
    t = StringTransport()
    proto.makeConnection(t)
    return clock, proto, t


def test_the_client_sends_the_protocol_byte_and_matches_answers_by_seq():
    clock, proto, t = client()
    d1, d2 = proto.call("A.One", {"a": 1}, 10), proto.call("A.Two", {}, 10)
    data = t.value()
    assert data[0] == 0 and list(msgpack.Unpacker(__import__("io").BytesIO(data[1:]),
                                                 raw=False))[0] == {"ServiceMethod": "A.One",
                                                                    "Seq": 1}
    got = []
    d1.addCallback(got.append)
    d2.addErrback(lambda f: got.append(f.value))
    proto.dataReceived(pack({"ServiceMethod": "A.Two", "Seq": 2, "Error": "No cluster leader"},
                            {"Kind": "NoLeader"}, {"ServiceMethod": "A.One", "Seq": 1,
                                                   "Error": ""}, {"ok": True}))
    assert isinstance(got[0], RemoteError) and got[0].kind == "NoLeader" and got[1] == {"ok": True}
    assert not clock.getDelayedCalls()


def test_a_call_that_times_out_fails_every_call_on_that_connection():
    clock, proto, t = client()
    failures = []
    for _ in range(2):
        proto.call("A.B", {}, 5).addErrback(lambda f: failures.append(f.value))
    clock.advance(5)
    assert len(failures) == 2 and all(isinstance(f, RPCConnectionError) for f in failures)
    assert t.disconnecting  # aborted: the calls on it go elsewhere


def test_a_garbled_answer_fails_the_calls_not_the_client():
    clock, proto, t = client()
    failures = []
    proto.call("A.B", {}, 5).addErrback(lambda f: failures.append(f.value))
    proto.dataReceived(b"\xc1\xc1")
    assert isinstance(failures[0], RPCConnectionError)


def test_blocking_calls_wait_longer_than_the_server_may_park():
    assert call_timeout(QueryOptions()) == 30.0
    assert call_timeout(QueryOptions(min_index=5)) > 300 * (1 + 1 / 16)
    assert call_timeout(QueryOptions(min_index=5, wait=900)) > 600 * (1 + 1 / 16)


# --- RemoteEndpoints over a fake pool --------------------------------------------------------

class FakePool:
    def __init__(self, behaviour):
        self.behaviour = behaviour  # address -> callable(method, body) -> Deferred
        self.calls = []

    def call(self, address, method, body, timeout):
        self.calls.append((address, method))
        return self.behaviour[address](method, body)

    def close(self):
        pass


def kv_answer(method, body):
    return succeed(wire.encode_read_result("KVS.Get", KVEntry("k", b"v"), QueryMeta(index=4)))


def value(d):
    out = []
    d.addBoth(out.append)
    return out[0]


def test_no_known_servers_is_consuls_error():
    remote = RemoteEndpoints(task.Clock(), lambda: [], pool=FakePool({}))
    assert isinstance(value(remote.read(q.KVGet("k"), QueryOptions())).value, NoServers)
    got = value(remote.write(KVOperation("set", KVEntry("k")), WriteRequest()))
    assert str(got.value) == "No known Consul servers"


def test_a_read_moves_to_another_server_on_a_connection_error():
    down = lambda m, b: fail(RPCConnectionError("lost", sent=True))  # noqa: E731
    pool = FakePool({"a:1": down, "b:1": kv_answer})
    remote = RemoteEndpoints(task.Clock(), lambda: ["a:1", "b:1"], pool=pool,
                             rng=random.Random(0))
    remote._preferred = "a:1"
    result = value(remote.read(q.KVGet("k"), QueryOptions()))
    assert isinstance(result, ReadResult) and result.value.value == b"v"
    assert [a for a, _ in pool.calls] == ["a:1", "b:1"] and remote.leader() == "b:1"


def test_a_sent_write_is_never_sent_twice_but_an_unsent_one_moves_on():
    write_ok = lambda m, b: succeed(wire.encode_write_result(  # noqa: E731
        KVOperation("set", KVEntry("k")), 9, True))
    lost = lambda m, b: fail(RPCConnectionError("lost", sent=True))  # noqa: E731
    refused = lambda m, b: fail(RPCConnectionError("refused", sent=False))  # noqa: E731
    for first, expect in ((lost, RPCConnectionError), (refused, WriteResult)):
        pool = FakePool({"a:1": first, "b:1": write_ok})
        remote = RemoteEndpoints(task.Clock(), lambda: ["a:1", "b:1"], pool=pool)
        remote._preferred = "a:1"
        got = value(remote.write(KVOperation("set", KVEntry("k")), WriteRequest()))
        got = got.value if expect is RPCConnectionError else got
        assert isinstance(got, expect)


def test_server_errors_come_back_as_the_same_kind():
    bad = lambda m, b: fail(RemoteError("KVS.Get: expected dict", "WireError"))  # noqa: E731
    remote = RemoteEndpoints(task.Clock(), lambda: ["a:1"], pool=FakePool({"a:1": bad}))
    assert isinstance(value(remote.read(q.KVGet("k"), QueryOptions())).value, InvalidRequest)
