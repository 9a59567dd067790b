"""HTTP checks, and the bounded response-body reading the Docker check shares.

A check requests `url` with Consul's defaults (GET, ``User-Agent: Consul Health Check``,
``Accept: text/plain, text/*, */*``, redirects followed as Go's client follows them, no
keep-alive) and maps the answer as Consul does: 2xx passing, 429 warning, anything else
critical, with the output ``HTTP GET <url>: 200 OK Output: <body>``. One timeout (default 10 s)
covers connecting, the headers and the body, like Go's ``http.Client.Timeout``: running out
before the headers is critical with Go's words; running out while reading the body reports the
status with the body read so far, as Consul does.

Only the first 4 KiB of a body are read; then the connection is dropped. (Consul reads the
whole body and keeps its last 4 KiB; we stop early so an endless body costs nothing.)
"""

from __future__ import annotations

import random
from typing import Callable, Mapping, Sequence

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.web.client import (
    Agent,
    BrowserLikeRedirectAgent,
    HTTPConnectionPool,
    ResponseFailed,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
)
from twisted.web.error import InfiniteRedirection, RedirectWithNoLocation, SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from agent import structs
from agent.checks.base import OUTPUT_MAX, USER_AGENT, CheckNotifier, IntervalRunner, dial_error

DEFAULT_TIMEOUT = 10.0  # Consul's HTTP check timeout
REDIRECT_LIMIT = 10  # Go's client gives up after 10 redirects
ACCEPT = "text/plain, text/*, */*"


class _BodyReader(Protocol):
    """Hands body bytes to `sink` until it returns False or the body ends; then fires `done`.

    Dropping the connection early is how we refuse to read more than we keep.
    """

    def __init__(self, sink: Callable[[bytes], bool], done: Deferred) -> None:
        self._sink = sink
        self._done = done
        self.finished = False

    def dataReceived(self, data: bytes) -> None:
        if self.finished:
            return
        if not self._sink(data):
            self.abort()
            self._finish()

    def connectionLost(self, reason=None) -> None:
        # A clean end, a dropped connection or our own abort: in every case the body is over,
        # and whatever arrived is what the check reports (Go's client does the same).
        self._finish()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self._done.callback(None)


def deliver_body(response, sink: Callable[[bytes], bool]) -> Deferred:
    """Feed `response`'s body to `sink` (see `_BodyReader`); the Deferred fires when it ends.

    Cancelling drops the connection and errbacks with `CancelledError`.
    """
    reader: _BodyReader

    def cancel(_: Deferred) -> None:
        reader.finished = True  # the coming connectionLost must not fire `done` again
        reader.abort()

    done = Deferred(cancel)
    reader = _BodyReader(sink, done)
    response.deliverBody(reader)
    return done


def capped_sink(buffer: bytearray, limit: int) -> Callable[[bytes], bool]:
    """A sink keeping the first `limit` bytes in `buffer` and asking for no more after that."""
    def sink(data: bytes) -> bool:
        buffer.extend(data[:limit - len(buffer)])
        return len(buffer) < limit
    return sink


@implementer(IBodyProducer)
class BytesProducer:
    """A request body that can be sent again (a redirect replays it; FileBodyProducer can't)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body) if body else UNKNOWN_LENGTH

    def startProducing(self, consumer) -> Deferred:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    # Twisted's factories log "Starting factory"/"Stopping factory" at INFO for every
    # connection; a check connects every interval, which would bury the agent's own log.
    noisy = False


class QuietHTTPConnectionPool(HTTPConnectionPool):
    """Twisted's connection pool with connections that do not announce themselves in the log.

    ``_factory`` is the pool's documented hook for the per-connection factory.
    """

    _factory = _QuietHTTP11ClientFactory


def quiet_pool(reactor) -> HTTPConnectionPool:
    """A pool without keep-alive (Consul disables it for checks) and without log noise."""
    return QuietHTTPConnectionPool(reactor, persistent=False)


def no_verify_creator(hostname: str, alpn: Sequence[bytes] = ()):
    """A TLS client connection creator that checks no certificate (Consul's TLSSkipVerify).

    Raises NotImplementedError without pyOpenSSL, as Twisted does. `alpn` lists the
    application protocols to offer (gRPC servers may insist on ``h2``).
    """
    try:
        from twisted.internet.ssl import CertificateOptions  # needs pyOpenSSL
    except ImportError:
        raise NotImplementedError("SSL support unavailable") from None  # as Twisted says
    options = (CertificateOptions(verify=False, acceptableProtocols=list(alpn)) if alpn
               else CertificateOptions(verify=False))
    return _NoVerifyCreator(options.getContext(), hostname)


@implementer(IPolicyForHTTPS)
class _NoVerifyPolicy:
    """TLS without checking the certificate chain or name (Consul's ``TLSSkipVerify``)."""

    def creatorForNetloc(self, hostname: bytes, port: int):
        return no_verify_creator(hostname.decode("ascii"))


class _NoVerifyCreator:
    def __init__(self, context, hostname: str) -> None:
        self._context = context
        self._hostname = hostname

    def clientConnectionForTLS(self, tls_protocol):
        from OpenSSL import SSL
        from twisted.internet.abstract import isIPAddress, isIPv6Address

        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        if not (isIPAddress(self._hostname) or isIPv6Address(self._hostname)):
            # Still send SNI: virtual hosts need it even when we don't verify.
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        connection.set_connect_state()
        return connection


def _declare_creator_interface() -> None:
    try:
        from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    except ImportError:  # pragma: no cover - very old Twisted
        return
    implementer(IOpenSSLClientConnectionCreator)(_NoVerifyCreator)


_declare_creator_interface()


def go_url_op(method: str) -> str:
    """The verb Go's url.Error starts with ("Get", "Post")."""
    return method[:1] + method[1:].lower()


class HTTPRunner(IntervalRunner):
    """Consul's HTTP check."""

    def __init__(self, reactor, check_id: str, interval: float, timeout: float,
                 notifier: CheckNotifier, rng: random.Random | None = None, *, url: str,
                 method: str = "", header: Mapping[str, tuple[str, ...]] | None = None,
                 body: str = "", tls_skip_verify: bool = False, output_max: int = OUTPUT_MAX,
                 **thresholds: int) -> None:
        super().__init__(reactor, check_id, interval, timeout or DEFAULT_TIMEOUT, notifier, rng,
                         **thresholds)
        self.url = url
        self.method = method or "GET"
        self.header = dict(header or {})
        self.body = body
        self.output_max = output_max
        # No keep-alive, as Consul disables it so a stale pooled connection can never fail a
        # check; and no "Starting factory" line in the log for every run.
        pool = quiet_pool(reactor)
        agent = (Agent(reactor, contextFactory=_NoVerifyPolicy(), pool=pool) if tls_skip_verify
                 else Agent(reactor, pool=pool))
        self._agent = BrowserLikeRedirectAgent(agent, redirectLimit=REDIRECT_LIMIT)

    def _headers(self) -> Headers:
        headers = Headers()
        for name, values in self.header.items():
            headers.setRawHeaders(name, list(values))
        if not headers.hasHeader("User-Agent"):
            headers.setRawHeaders("User-Agent", [USER_AGENT])
        if not headers.hasHeader("Accept"):
            headers.setRawHeaders("Accept", [ACCEPT])
        return headers

    def run_once(self) -> Deferred:
        return Deferred.fromCoroutine(self._check())

    async def _check(self) -> tuple[str, str]:
        deadline = self._reactor.seconds() + self.timeout
        where = f'{go_url_op(self.method)} "{self.url}"'  # as Go's url.Error starts
        expired = []

        def expire(waiting: Deferred) -> None:
            expired.append(True)
            waiting.cancel()

        try:
            request = self._agent.request(
                self.method.encode("ascii"), self.url.encode("utf-8"), self._headers(),
                BytesProducer(self.body.encode("utf-8")) if self.body else None)
        except Exception as exc:  # noqa: BLE001 - a malformed URL, no TLS support, ...
            return structs.CRITICAL, f"{where}: {self._describe(exc)}"
        timer = self._reactor.callLater(self.timeout, expire, request)
        try:
            response = await request
        except Exception as exc:  # noqa: BLE001 - every failure is the check's output
            if expired:  # the cancellation surfaces as ResponseNeverReceived or CancelledError
                return structs.CRITICAL, (f"{where}: context deadline exceeded "
                                          "(Client.Timeout exceeded while awaiting headers)")
            return structs.CRITICAL, f"{where}: {self._describe(exc)}"
        finally:
            if timer.active():
                timer.cancel()

        body = bytearray()
        reading = deliver_body(response, capped_sink(body, self.output_max))
        timer = self._reactor.callLater(max(0.0, deadline - self._reactor.seconds()),
                                        expire, reading)
        try:
            await reading
        except CancelledError:
            if not expired:
                raise
            # Go's client also gives up on the body at the deadline; Consul then reports the
            # status it got with whatever body arrived.
        finally:
            if timer.active():
                timer.cancel()

        phrase = response.phrase.decode("latin-1")
        output = (f"HTTP {self.method} {self.url}: {response.code} {phrase} Output: "
                  f"{body.decode('utf-8', 'replace')}")
        if 200 <= response.code <= 299:
            return structs.PASSING, output
        if response.code == 429:  # Too Many Requests: Consul's only warning
            return structs.WARNING, output
        return structs.CRITICAL, output

    def _describe(self, exc: BaseException) -> str:
        """The part of Go's error text after the URL."""
        if isinstance(exc, ResponseNeverReceived):
            for reason in exc.reasons:
                if type(reason.value).__module__.startswith(("OpenSSL", "service_identity")):
                    return f"tls: {tls_text(reason.value)}"
            # The server closed (or reset) without answering; Go reports "EOF".
            return "EOF"
        if isinstance(exc, NotImplementedError) and "SSL" in str(exc):
            return "tls: HTTPS checks need pyOpenSSL (install twisted[tls])"
        if isinstance(exc, ResponseFailed):
            reasons = [reason.value for reason in exc.reasons]
            if any(isinstance(value, InfiniteRedirection) for value in reasons):
                return f"stopped after {REDIRECT_LIMIT} redirects"
            if reasons and isinstance(reasons[0], RedirectWithNoLocation):
                return "302 response missing Location header"
            return "unexpected EOF"
        if isinstance(exc, SchemeNotSupported):
            return f'unsupported protocol scheme "{self.url.partition(":")[0]}"'
        if isinstance(exc, (error.ConnectError, error.DNSLookupError)):
            return dial_error(exc, "tcp", _host_port(self.url))
        return str(exc) or type(exc).__name__


def tls_text(exc: BaseException) -> str:
    """OpenSSL's error queue ([(lib, func, reason), ...]) as its reasons, or the error text."""
    queue = exc.args[0] if exc.args else None
    if isinstance(queue, list) and queue and all(isinstance(e, tuple) for e in queue):
        return "; ".join(str(e[-1]) for e in queue)
    return str(exc)


def _host_port(url: str) -> str:
    """The host:port Go would dial for `url` (for error messages only)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
    except ValueError:
        return url
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
