"""gRPC checks: the standard ``grpc.health.v1.Health/Check`` call, worded as Consul words it.

The target is ``host:port[/service]``: everything after the first "/" is the request's
``service`` (empty asks about the whole server). SERVING is passing with Consul's
``gRPC check <target>: success``; any other status is critical with "gRPC application didn't
report service healthy"; a failed call is critical with Go's ``rpc error: code = <Code> desc =
<text>``. The timeout (default 10 s) covers connecting and the call, as Consul's context does.

The call goes through grpcio's future API: the channel and the call are started on the reactor
thread without blocking, grpcio's own threads carry the call, and its completion comes back to
the reactor through ``callFromThread``. No thread of ours waits on it, so a hanging target
costs neither a reactor turn nor a pool thread. Every run uses a channel of its own, closed
when the run ends or is cancelled (check removed, agent stopping), as Consul dials per run;
a connection still in its handshake then is dropped within the check's timeout at most.

TLS (``GRPCUseTLS``) verifies the server against the system's trust store. grpcio cannot
switch verification off, so ``TLSSkipVerify`` is honoured this way: before each call a TLS
handshake without verification (Twisted, on the reactor) fetches the certificate the server
presents, and the call then trusts exactly that certificate under a name it carries. Whatever
certificate the server shows is accepted, which is what skipping verification means.
"""

from __future__ import annotations

import ipaddress
import os
import random
import ssl
from typing import Any

from twisted.internet import defer, error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from agent import structs
from agent.checks.base import CheckNotifier, IntervalRunner, dial_error
from agent.checks.tcp import client_endpoint, split_host_port

DEFAULT_TIMEOUT = 10.0  # Consul's gRPC check timeout
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
UNHEALTHY = "gRPC application didn't report service healthy"
DEADLINE = "context deadline exceeded"  # Go's words for a run out of time
# grpcio enforces the deadline itself; the reactor gives up this much later, should the
# completion ever fail to come back.
GRACE = 1.0

# grpc.StatusCode names as Go's codes.Code.String() spells them.
_GO_CODES = {
    "OK": "OK", "CANCELLED": "Canceled", "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument", "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound", "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied", "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition", "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange", "UNIMPLEMENTED": "Unimplemented", "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable", "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}


def load_grpc() -> tuple[Any, Any]:
    """(grpc, health_pb2), imported on first use so agents without gRPC checks never load them.

    grpc's core reads ``GRPC_VERBOSITY`` once, at import, and otherwise writes its own lines
    to stderr for every failed handshake. Every failure already reaches the check's output,
    so unless the operator chose a verbosity it is silenced for that import only; the
    environment is restored at once, so script checks never inherit the setting.
    """
    chosen = "GRPC_VERBOSITY" in os.environ
    if not chosen:
        os.environ["GRPC_VERBOSITY"] = "NONE"
    try:
        import grpc
        from grpc_health.v1 import health_pb2
    finally:
        if not chosen:
            os.environ.pop("GRPC_VERBOSITY", None)
    return grpc, health_pb2


def split_target(target: str) -> tuple[str, str]:
    """(server, service) of ``server[/service]``; the service keeps any later "/"."""
    server, _, service = target.partition("/")
    return server, service


def rpc_error(code: str, details: str) -> str:
    """A failed call as Go's status error prints it; `code` is a grpc.StatusCode name."""
    return f"rpc error: code = {_GO_CODES.get(code, code.title())} desc = {details}"


def _dial_failed(text: str) -> str:
    return rpc_error("UNAVAILABLE", f'connection error: desc = "transport: {text}"')


def _system_roots() -> bytes | None:
    """The system's trust store as PEM, as Go's TLS client uses it; None leaves grpcio's own."""
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.isfile(path):
            try:
                with open(path, "rb") as handle:
                    return handle.read()
            except OSError:
                continue
    return None


def certificate_name(certificate, host: str) -> str:
    """A name `certificate` (a cryptography x509 object) is valid for; `host` if it is one.

    A wildcard name gets a label filled in, since it is matched, not presented.
    """
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    dns: list[str] = []
    ips: list[str] = []
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        dns = sans.value.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)]
    try:
        literal = str(ipaddress.ip_address(host))
    except ValueError:
        literal = ""
    if (literal and literal in ips) or host in dns:
        return host
    if dns:
        return dns[0].replace("*", "x", 1)
    if ips:
        return ips[0]
    common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else host


@implementer(IHandshakeListener)
class _CertificateGrab(Protocol):
    """Completes a TLS handshake, keeps the server's certificate and hangs up."""

    def __init__(self) -> None:
        self.certificate = None
        self.done: Deferred = Deferred(lambda _: self._abort())

    def handshakeCompleted(self) -> None:
        self.certificate = self.transport.getPeerCertificate()
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        if self.done.called:  # cancelled: nobody waits any more
            return
        if self.certificate is not None:
            self.done.callback(self.certificate)
        else:
            self.done.errback(reason)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()


class _GrabFactory(Factory):
    protocol = _CertificateGrab
    noisy = False  # no "Starting factory" INFO line for every run


class _Failed(Exception):
    """A run ended before the call; the text is the check's output."""


class GRPCRunner(IntervalRunner):
    """Consul's gRPC check."""

    def __init__(self, reactor, check_id: str, interval: float, timeout: float,
                 notifier: CheckNotifier, rng: random.Random | None = None, *, target: str,
                 use_tls: bool = False, tls_skip_verify: bool = False,
                 **thresholds: int) -> None:
        super().__init__(reactor, check_id, interval, timeout or DEFAULT_TIMEOUT, notifier, rng,
                         **thresholds)
        self.target = target
        self.server, self.service = split_target(target)
        self.use_tls = use_tls
        self.tls_skip_verify = tls_skip_verify
        try:
            self._grpc, self._health = load_grpc()
        except ImportError as exc:
            # A broken install must not fail the registration (or pass the check): every run
            # says what is missing instead.
            self._missing = (f"gRPC checks need the grpcio and grpcio-health-checking "
                             f"packages: {exc}")
        else:
            self._missing = ""
        self._roots = _system_roots() if use_tls and not tls_skip_verify else None

    def run_once(self) -> Deferred:
        if self._missing:
            return succeed((structs.CRITICAL, self._missing))
        run = Deferred.fromCoroutine(self._check())
        run.addTimeout(self.timeout + GRACE, self._reactor,
                       onTimeoutCancel=lambda result, timeout: (
                           structs.CRITICAL, rpc_error("DEADLINE_EXCEEDED", DEADLINE)))
        return run

    async def _check(self) -> tuple[str, str]:
        try:
            host, port = split_host_port(self.server)
        except ValueError as exc:
            # Go's dialer refuses such an address before connecting; grpcio would guess.
            return structs.CRITICAL, _dial_failed(f"Error while dialing dial tcp: {exc}")
        deadline = self._reactor.seconds() + self.timeout
        grpc = self._grpc
        options: list[tuple[str, Any]] = [
            # A subchannel of this channel's own, so closing the channel closes its connection
            # whatever other checks of the same server do.
            ("grpc.use_local_subchannel_pool", 1),
            # grpc's limit for one connection attempt (20 s unless set; the option's name is
            # historical). A server that accepts but never finishes the HTTP/2 handshake
            # would otherwise keep a socket open that long after the run, or its stop, ended.
            ("grpc.min_reconnect_backoff_ms", max(1, round(self.timeout * 1000))),
        ]
        credentials = None
        if self.use_tls and self.tls_skip_verify:
            try:
                presented = await self._presented_certificate(host, port)
            except _Failed as exc:
                return structs.CRITICAL, str(exc)
            from cryptography.hazmat.primitives.serialization import Encoding

            certificate = presented.to_cryptography()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=certificate.public_bytes(Encoding.PEM))
            options.append(("grpc.ssl_target_name_override", certificate_name(certificate, host)))
        elif self.use_tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=self._roots)
        remaining = max(0.0, deadline - self._reactor.seconds())
        return await self._call(credentials, options, remaining)

    async def _presented_certificate(self, host: str, port: int):
        """The server's certificate, fetched by a TLS handshake that checks nothing."""
        from twisted.internet.endpoints import wrapClientTLS

        from agent.checks.http import no_verify_creator

        try:
            creator = no_verify_creator(host, alpn=[b"h2"])
        except NotImplementedError:
            raise _Failed("tls: gRPC checks with TLSSkipVerify need pyOpenSSL "
                          "(install twisted[tls])") from None
        endpoint = wrapClientTLS(creator, client_endpoint(self._reactor, host, port))
        fetching = Deferred.fromCoroutine(self._fetch(endpoint))
        fetching.addTimeout(self.timeout, self._reactor)
        try:
            return await fetching
        except defer.TimeoutError:
            raise _Failed(rpc_error("DEADLINE_EXCEEDED", DEADLINE)) from None
        except (error.ConnectError, error.DNSLookupError) as exc:
            raise _Failed(_dial_failed(
                f"Error while dialing {dial_error(exc, 'tcp', self.server)}")) from None
        except Exception as exc:  # noqa: BLE001 - the handshake failed or the peer hung up
            raise _Failed(_dial_failed(
                f"authentication handshake failed: {_handshake_text(exc)}")) from None

    async def _fetch(self, endpoint) -> Any:
        grab = await endpoint.connect(_GrabFactory())
        return await grab.done

    def _call(self, credentials, options: list, timeout: float) -> Deferred:
        """Start the Health/Check call; the Deferred fires on the reactor with the result.

        Cancelling it cancels the call and closes the channel.
        """
        grpc = self._grpc
        if credentials is None:
            channel = grpc.insecure_channel(self.server, options=options)
        else:
            channel = grpc.secure_channel(self.server, credentials, options=options)
        try:
            method = channel.unary_unary(
                HEALTH_CHECK,
                request_serializer=self._health.HealthCheckRequest.SerializeToString,
                response_deserializer=self._health.HealthCheckResponse.FromString)
            future = method.future(self._health.HealthCheckRequest(service=self.service),
                                   timeout=timeout)
        except BaseException:
            channel.close()
            raise

        def cancel(_: Deferred) -> None:
            future.cancel()
            channel.close()

        done: Deferred = Deferred(cancel)

        def settle(completed) -> None:  # on the reactor thread
            channel.close()
            if done.called:
                return  # cancelled meanwhile
            try:
                result = self._result(completed)
            except Exception:  # noqa: BLE001 - reported by the run loop as a failed run
                done.errback()
            else:
                done.callback(result)

        # grpcio calls back on one of its own threads (or at once, if already done).
        future.add_done_callback(lambda completed: self._reactor.callFromThread(settle,
                                                                                completed))
        return done

    def _result(self, completed) -> tuple[str, str]:
        grpc = self._grpc
        if completed.cancelled():
            return structs.CRITICAL, rpc_error("CANCELLED", "context canceled")
        try:
            response = completed.result()
        except grpc.RpcError as exc:
            code = exc.code().name
            if code == "DEADLINE_EXCEEDED":
                return structs.CRITICAL, rpc_error(code, DEADLINE)
            return structs.CRITICAL, rpc_error(code, exc.details() or "")
        if response.status == self._health.HealthCheckResponse.SERVING:
            return structs.PASSING, f"gRPC check {self.target}: success"
        return structs.CRITICAL, UNHEALTHY


def _handshake_text(exc: BaseException) -> str:
    """Why a TLS handshake failed, in the shape of Go's "tls: ..." errors."""
    if type(exc).__module__.startswith("OpenSSL"):
        from agent.checks.http import tls_text

        return f"tls: {tls_text(exc)}"
    if isinstance(exc, (error.ConnectionDone, error.ConnectionLost)):
        return "EOF"
    return str(exc) or type(exc).__name__
