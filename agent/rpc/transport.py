"""The server port: Consul's RPC framing over TCP, both the server's listener and the client's
connections.

The first byte of a connection selects the protocol, as Consul's `pool.RPCType`: 0x00
RPCConsul is served; 0x01 Raft is handed to the server's Raft transport when it runs one;
every other byte (multiplexing, TLS, ...) is refused with a log line and the connection
closed. RPCConsul
is net/rpc with hashicorp/net-rpc-msgpackrpc: a stream of msgpack objects, a request header
{ServiceMethod, Seq} then its body, answered by a header {ServiceMethod, Seq, Error} then a
body, in any order (calls are matched by Seq, so one connection carries many at once).

Bad input never takes the server down: a stream that is not msgpack, a header of the wrong
shape, or a message beyond `MAX_MESSAGE` closes that connection only; a body its endpoint
cannot read is answered with an error.
"""

from __future__ import annotations

from typing import Any, Callable

import msgpack
import txaio
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from agent.errors import WaypostError

txaio.use_twisted()

RPC_CONSUL = 0x00
RPC_NAMES = {1: "Raft", 2: "Multiplex", 3: "TLS", 4: "MultiplexV2", 5: "Snapshot", 6: "Gossip",
             7: "TLSInsecure"}
MAX_MESSAGE = 16 * 1024 * 1024  # one header or body; Consul's own are far smaller
MAX_PENDING = 1024  # calls in flight on one server-side connection
CONNECT_TIMEOUT = 5.0


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, unicode_errors="surrogateescape",
                            max_buffer_size=MAX_MESSAGE)


class RPCConnectionError(WaypostError):
    """The call could not reach the server or its connection failed before an answer:
    another server may take it. `sent` says whether the call may have reached the server
    (a write that was sent is never sent again: it may have been applied)."""

    def __init__(self, text: str, sent: bool = True) -> None:
        super().__init__(text)
        self.sent = sent


class RemoteError(WaypostError):
    """The server answered the call with an error (its text as Consul's Error header)."""

    def __init__(self, text: str, kind: str = "") -> None:
        super().__init__(text)
        self.kind = kind


# --- server ----------------------------------------------------------------------------------

Handler = Callable[[str, Any], Any]  # (ServiceMethod, body) -> body, or a Deferred of one


class RPCServerProtocol(Protocol):
    log = txaio.make_logger()

    def __init__(self, handler: Handler,
                 others: dict[int, Callable[[], Protocol]] | None = None) -> None:
        self._handler = handler
        self._others = others or {}
        self._mode: int | None = None
        self._unpacker = _unpacker()
        self._header: dict | None = None
        self._pending: dict[int, Deferred] = {}
        self._closed = False

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        if self._mode is None:
            self._mode = data[0]
            data = data[1:]
            other = self._others.get(self._mode)
            if other is not None:
                self._hand_over(other(), data)
                return
            if self._mode != RPC_CONSUL:
                name = RPC_NAMES.get(self._mode, "unknown")
                self.log.warn("refusing a server-port connection from {peer}: protocol byte "
                              "{byte:#04x} ({name}) is not served (only RPC, 0x00)",
                              peer=self._peer(), byte=self._mode, name=name)
                self._close()
                return
        try:
            self._unpacker.feed(data)
            for obj in self._unpacker:
                self._message(obj)
                if self._closed:
                    return
        except Exception as exc:  # noqa: BLE001 - any undecodable stream ends this connection
            self.log.warn("closing the RPC connection from {peer}: {exc}", peer=self._peer(),
                          exc=f"{type(exc).__name__}: {exc}"[:200])
            self._close()

    def _hand_over(self, proto: Protocol, data: bytes) -> None:
        """Give the connection to the protocol its first byte selected (Raft's 0x01)."""
        self._closed = True
        transport = self.transport
        transport.protocol = proto  # the reactor delivers further reads to it
        proto.makeConnection(transport)
        if data:
            proto.dataReceived(data)

    def _message(self, obj: Any) -> None:
        if self._header is None:
            if (not isinstance(obj, dict) or not isinstance(obj.get("ServiceMethod"), str)
                    or not isinstance(obj.get("Seq"), int) or isinstance(obj.get("Seq"), bool)):
                raise ValueError("a request header must be {ServiceMethod, Seq}")
            self._header = obj
            return
        header, self._header = self._header, None
        method, seq = header["ServiceMethod"], header["Seq"]
        if len(self._pending) >= MAX_PENDING or seq in self._pending:
            raise ValueError("too many calls in flight, or a Seq reused")
        d = maybeDeferred(self._handler, method, obj)
        self._pending[seq] = d
        d.addCallbacks(lambda body: self._respond(method, seq, "", body),
                       lambda f: self._failed(method, seq, f))
        d.addErrback(lambda f: self.log.failure("answering {method} failed", f, method=method))

    def _failed(self, method: str, seq: int, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        exc = failure.value
        if not isinstance(exc, WaypostError):
            self.log.failure("RPC {method} failed", failure, method=method)
            text = f"rpc error: {type(exc).__name__}"
        else:
            text = str(exc)
        # net/rpc sends an empty body with an error; the error's kind rides in it so the
        # client raises the same exception type (a Go client skips it).
        self._respond(method, seq, text or "error", {"Kind": type(exc).__name__})

    def _respond(self, method: str, seq: int, error: str, body: Any) -> None:
        self._pending.pop(seq, None)
        if self._closed:
            return
        header = {"ServiceMethod": method, "Seq": seq, "Error": error}
        self.transport.write(_pack(header) + _pack(body))

    def _peer(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"

    def _close(self) -> None:
        self._closed = True
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self._closed = True
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.cancel()  # a blocking read parked for a client that went away


class RPCServerFactory(Factory):
    """What listens on the server port: `handler(method, body)` answers each call."""

    noisy = False

    def __init__(self, handler: Handler,
                 others: dict[int, Callable[[], Protocol]] | None = None) -> None:
        """`others` maps another protocol byte (0x01 Raft) to a factory of the protocol that
        takes such a connection over once its first byte is read."""
        self._handler = handler
        self.others = others if others is not None else {}

    def buildProtocol(self, addr) -> RPCServerProtocol:
        return RPCServerProtocol(self._handler, self.others)


# --- client ----------------------------------------------------------------------------------

class RPCClientProtocol(Protocol):
    """One connection to one server; calls are matched to answers by Seq."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._unpacker = _unpacker()
        self._seq = 0
        self._calls: dict[int, tuple[Deferred, Any]] = {}
        self._header: dict | None = None
        self.connected = False
        self.on_lost: Callable[[], None] = lambda: None

    def connectionMade(self) -> None:
        self.connected = True
        self.transport.write(bytes([RPC_CONSUL]))

    def call(self, method: str, body: Any, timeout: float) -> Deferred:
        self._seq += 1
        seq = self._seq
        def cancel(_: Deferred) -> None:
            found = self._calls.pop(seq, None)
            if found is not None and found[1].active():
                found[1].cancel()
        d = Deferred(cancel)
        timer = self._reactor.callLater(timeout, self._timed_out, seq, method)
        self._calls[seq] = (d, timer)
        self.transport.write(_pack({"ServiceMethod": method, "Seq": seq}) + _pack(body))
        return d

    def _timed_out(self, seq: int, method: str) -> None:
        # An unanswered call means an unresponsive server: drop the connection, which fails
        # every call on it, so each is retried on another server.
        if seq in self._calls:
            self._abort(RPCConnectionError(f"rpc error: timeout waiting for {method}"))

    def dataReceived(self, data: bytes) -> None:
        try:
            self._unpacker.feed(data)
            for obj in self._unpacker:
                if self._header is None:
                    if not isinstance(obj, dict) or not isinstance(obj.get("Seq"), int):
                        raise ValueError("bad response header")
                    self._header = obj
                    continue
                header, self._header = self._header, None
                self._answer(header, obj)
        except Exception as exc:  # noqa: BLE001 - a garbled stream fails this connection only
            self._abort(RPCConnectionError(f"rpc error: bad answer from server: {exc}"[:200]))

    def _answer(self, header: dict, body: Any) -> None:
        found = self._calls.pop(header["Seq"], None)
        if found is None:
            return  # cancelled or timed out meanwhile
        d, timer = found
        if timer.active():
            timer.cancel()
        error = header.get("Error") or ""
        if error:
            kind = body.get("Kind", "") if isinstance(body, dict) else ""
            d.errback(RemoteError(str(error), str(kind)))
        else:
            d.callback(body)

    def _abort(self, exc: Exception) -> None:
        self._fail_all(exc)
        if self.transport is not None:
            self.transport.abortConnection()

    def _fail_all(self, exc: Exception) -> None:
        calls, self._calls = self._calls, {}
        for d, timer in calls.values():
            if timer.active():
                timer.cancel()
            d.errback(exc)

    def connectionLost(self, reason=None) -> None:
        self.connected = False
        self._fail_all(RPCConnectionError("rpc error: connection to the server was lost"))
        self.on_lost()


class ConnectionPool:
    """One reused connection per server address ("host:port"), made on first use."""

    def __init__(self, reactor, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._conns: dict[str, RPCClientProtocol] = {}
        self._waiting: dict[str, list[Deferred]] = {}  # callers of a connection being made
        self._connecting: dict[str, Deferred] = {}

    def call(self, address: str, method: str, body: Any, timeout: float) -> Deferred:
        """Fires with the answer's body; fails with RemoteError (the server said no) or
        RPCConnectionError (no answer: it may be retried elsewhere)."""
        d = self._connection(address)
        return d.addCallback(lambda proto: proto.call(method, body, timeout))

    def _connection(self, address: str) -> Deferred:
        found = self._conns.get(address)
        if found is not None and found.connected:
            d = Deferred()
            d.callback(found)
            return d
        waiter = Deferred()
        self._waiting.setdefault(address, []).append(waiter)
        if address not in self._connecting:
            self._connect(address)
        return waiter

    def _connect(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        proto = RPCClientProtocol(self._reactor)

        def lost() -> None:
            if self._conns.get(address) is proto:
                del self._conns[address]
        proto.on_lost = lost

        def done(result: Any) -> None:
            self._connecting.pop(address, None)
            waiters = self._waiting.pop(address, [])
            if isinstance(result, Failure):
                exc = RPCConnectionError(
                    f"rpc error: failed to connect to {address}: {result.getErrorMessage()}",
                    sent=False)
                for w in waiters:
                    w.errback(exc)
                return
            self._conns[address] = result
            for w in waiters:
                w.callback(result)
        try:
            endpoint = TCP4ClientEndpoint(self._reactor, host, int(port),
                                          timeout=self._connect_timeout)
            connecting = endpoint.connect(_OneProtocol(proto))
        except Exception:  # noqa: BLE001 - a bad address fails like an unreachable one
            self._reactor.callLater(0, done, Failure())
            self._connecting[address] = Deferred()
            return
        self._connecting[address] = connecting
        connecting.addBoth(done)

    def close(self) -> None:
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            if conn.transport is not None:
                conn.transport.loseConnection()
        for connecting in list(self._connecting.values()):
            connecting.cancel()


class _OneProtocol(Factory):
    noisy = False

    def __init__(self, proto: RPCClientProtocol) -> None:
        self._proto = proto

    def buildProtocol(self, addr) -> RPCClientProtocol:
        return self._proto


__all__ = ["ConnectionPool", "RPCConnectionError", "RPCServerFactory",
           "RemoteError"]
