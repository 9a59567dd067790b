"""A tiny blocking client for an agent's v1 HTTP API, used by the CLI commands.

Owns: where the agent is and which token to send (flags first, then Consul's
environment variables), encoding requests (Consul-style query strings, the
``X-Consul-Token`` header, TLS settings), and turning every transport or HTTP
failure into :class:`AgentError`, whose message is the one line the CLI prints.

The CLI is short-lived, so this uses ``http.client`` directly: no Twisted, no
connection reuse, no retries.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = [
    "DEFAULT_ADDRESS",
    "AgentClient",
    "AgentError",
    "AgentUnreachable",
    "Response",
    "TLSSettings",
    "encode_query",
    "quote_path",
    "resolve_address",
    "resolve_tls",
    "resolve_token",
]

DEFAULT_ADDRESS = "http://127.0.0.1:8500"
USER_AGENT = "waypost-cli/0.1.0"

# A query is a list of (name, value) pairs; a value of None gives a bare name,
# as in Consul's "?recurse" and "?keys".
Query = Iterable[tuple[str, "str | None"]]


class AgentError(Exception):
    """A request failed; ``str()`` is the complete one-line message to print."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AgentUnreachable(AgentError):
    """The agent could not be reached at all (refused, unresolvable, TLS ...)."""


@dataclass(frozen=True)
class Response:
    """An HTTP answer: status, reason phrase, headers (lower-cased names), body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON; an agent answering garbage is an AgentError."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as exc:
            raise AgentError(f"Error: invalid JSON in agent response: {exc}") from None


@dataclass(frozen=True)
class TLSSettings:
    """TLS options for https addresses (Consul's -ca-file, -client-cert, ...)."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify: bool = True


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "t", "true", "yes", "on"}


def resolve_address(flag_value: str | None, env: Mapping[str, str]) -> str:
    """The agent's base URL: ``-http-addr``, else ``CONSUL_HTTP_ADDR``, else
    ``WAYPOST_HTTP_ADDR``, else ``http://127.0.0.1:8500``.

    A bare ``host:port`` gets ``http://`` (``https://`` when ``CONSUL_HTTP_SSL``
    is true, as Consul does). Raises :class:`AgentError` for an unusable value.
    """
    raw = (flag_value or env.get("CONSUL_HTTP_ADDR") or env.get("WAYPOST_HTTP_ADDR")
           or DEFAULT_ADDRESS).strip()
    if "://" not in raw:
        scheme = "https" if _truthy(env.get("CONSUL_HTTP_SSL")) else "http"
        raw = f"{scheme}://{raw}"
    parts = urlsplit(raw)
    if parts.scheme.lower() not in ("http", "https"):
        raise AgentError(f"Error: unsupported scheme {parts.scheme!r} in agent "
                         f"address {raw!r} (use http:// or https://)")
    if not parts.hostname:
        raise AgentError(f"Error: no host in agent address {raw!r}")
    try:
        parts.port  # noqa: B018 -- evaluated only to validate the port
    except ValueError:
        raise AgentError(f"Error: invalid port in agent address {raw!r}") from None
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


def resolve_token(flag_token: str | None, flag_token_file: str | None,
                  env: Mapping[str, str]) -> str | None:
    """The ACL token: ``-token``, ``-token-file``, ``CONSUL_HTTP_TOKEN``, then
    ``CONSUL_HTTP_TOKEN_FILE``; None when there is none."""
    if flag_token:
        return flag_token
    path = flag_token_file
    if not path:
        if env.get("CONSUL_HTTP_TOKEN"):
            return env["CONSUL_HTTP_TOKEN"]
        path = env.get("CONSUL_HTTP_TOKEN_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError as exc:
        raise AgentError(f"Error: could not read token file {path}: "
                         f"{exc.strerror or exc}") from None


def resolve_tls(ca_file: str | None, client_cert: str | None, client_key: str | None,
                env: Mapping[str, str]) -> TLSSettings:
    """TLS settings from flags, falling back to Consul's environment variables."""
    verify_env = env.get("CONSUL_HTTP_SSL_VERIFY")
    return TLSSettings(
        ca_file=ca_file or env.get("CONSUL_CACERT") or None,
        client_cert=client_cert or env.get("CONSUL_CLIENT_CERT") or None,
        client_key=client_key or env.get("CONSUL_CLIENT_KEY") or None,
        verify=True if verify_env is None or verify_env == "" else _truthy(verify_env),
    )


def encode_query(query: Query) -> str:
    """``[("recurse", None), ("dc", "dc1")]`` -> ``"recurse&dc=dc1"``."""
    parts = []
    for name, value in query:
        if value is None:
            parts.append(quote(name, safe=""))
        else:
            parts.append(f"{quote(name, safe='')}={quote(value, safe='/:')}")
    return "&".join(parts)


class AgentClient:
    """Sends one request per call to the agent at ``address`` (a base URL)."""

    def __init__(self, address: str, token: str | None = None, *,
                 tls: TLSSettings | None = None, timeout: float | None = None) -> None:
        self.address = address
        self._parts = urlsplit(address)
        self._token = token
        self._tls = tls or TLSSettings()
        self._timeout = timeout

    def request(self, method: str, path: str, *, query: Query = (),
                body: bytes | None = None, allow: Collection[int] = ()) -> Response:
        """Send ``method path?query`` and return the response.

        ``path`` is already percent-encoded (see :func:`quote_path`). Statuses
        of 400 and above raise :class:`AgentError` unless listed in ``allow``
        (``kv get`` allows 404, for instance).
        """
        target = self._parts.path + path
        encoded = encode_query(query)
        if encoded:
            target += "?" + encoded
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self._token:
            headers["X-Consul-Token"] = self._token
        connection = self._connect()
        try:
            connection.request(method, target, body=body, headers=headers)
            raw = connection.getresponse()
            response = Response(status=raw.status, reason=raw.reason,
                                headers={k.lower(): v for k, v in raw.getheaders()},
                                body=raw.read())
        except (OSError, http.client.HTTPException) as exc:
            raise AgentUnreachable(
                f"Error connecting to agent at {self.address}: {_describe(exc)}") from None
        finally:
            connection.close()
        if response.status >= 400 and response.status not in allow:
            raise AgentError(_http_error_line(response), status=response.status)
        return response

    def get_json(self, path: str, *, query: Query = (), missing: Any = None) -> Any:
        """GET ``path`` and decode its JSON; a 404 gives ``missing`` instead."""
        response = self.request("GET", path, query=query, allow=(404,))
        if response.status == 404:
            return missing
        return response.json()

    def _connect(self) -> http.client.HTTPConnection:
        host = self._parts.hostname or "127.0.0.1"
        port = self._parts.port
        if self._parts.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self._timeout,
                                               context=self._ssl_context())
        return http.client.HTTPConnection(host, port, timeout=self._timeout)

    def _ssl_context(self) -> ssl.SSLContext:
        tls = self._tls
        try:
            context = ssl.create_default_context(cafile=tls.ca_file)
            if tls.client_cert:
                context.load_cert_chain(tls.client_cert, tls.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise AgentError(f"Error: could not load TLS files: {_describe(exc)}") from None
        if not tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def quote_path(value: str, keep_slashes: bool = True) -> str:
    """Percent-encode ``value`` for use in a URL path.

    ``keep_slashes`` leaves ``/`` alone, because KV keys are paths; service
    IDs and node names are a single segment and pass ``False``.
    """
    return quote(value, safe="/" if keep_slashes else "")


def _describe(exc: BaseException) -> str:
    # The strerror of a refused connect() is "Connection refused", exactly the
    # wording the CLI promises; other errors fall back to their text.
    if isinstance(exc, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed by the agent without a response"
    return str(exc) or type(exc).__name__


def _http_error_line(response: Response) -> str:
    text = response.body.decode("utf-8", "replace").strip()
    # Keep the promise of one line even when an agent sends a multi-line body.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = " ".join(lines) if lines else response.reason
    return f"Error: {response.status} {text}".rstrip()
