"""Local probes the sidekick runs before each heartbeat: HTTP, TCP or a shell command.

Owns: turning ``-check-http``/``-check-tcp``/``-check-cmd`` into a callable that returns
``(status, output)`` with Consul's status names and its meanings: HTTP 2xx is passing, 429 is
warning, anything else (or no answer) critical; a TCP connection is passing; a command exiting
0 is passing, 1 warning, anything else critical. Output is capped at 4 KiB as the agent caps it.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
from collections.abc import Callable
from urllib.parse import urlsplit

from gateway.cli.commands import CommandError

__all__ = ["Probe", "cmd_probe", "http_probe", "make_probe", "tcp_probe"]

Probe = Callable[[], tuple[str, str]]
OUTPUT_LIMIT = 4096
PASSING, WARNING, CRITICAL = "passing", "warning", "critical"


def _cap(text: str) -> str:
    if len(text) <= OUTPUT_LIMIT:
        return text
    return text[:OUTPUT_LIMIT] + " ... (output truncated)"


def http_probe(url: str, timeout: float) -> Probe:
    """GET ``url``: 2xx passing, 429 warning, anything else critical."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(f'Error: -check-http needs an http:// or https:// URL, got "{url}"')
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection

    def probe() -> tuple[str, str]:
        connection = cls(parts.hostname, parts.port, timeout=timeout)
        try:
            connection.request("GET", target, headers={"User-Agent": "waypost-sidekick"})
            response = connection.getresponse()
            body = response.read(OUTPUT_LIMIT).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            return CRITICAL, _cap(f"Get {url}: {exc}")
        finally:
            connection.close()
        status = response.status
        verdict = PASSING if 200 <= status < 300 else WARNING if status == 429 else CRITICAL
        return verdict, _cap(f"HTTP GET {url}: {status} {response.reason} Output: {body}")
    return probe


def tcp_probe(address: str, timeout: float) -> Probe:
    """Connect to ``HOST:PORT``: a connection is passing, none is critical."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise CommandError(f'Error: -check-tcp needs HOST:PORT, got "{address}"')
    port = int(port_text)

    def probe() -> tuple[str, str]:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            return CRITICAL, f"dial tcp {address}: {exc.strerror or exc}"
        return PASSING, f"TCP connect {address}: Success"
    return probe


def cmd_probe(command: str, timeout: float) -> Probe:
    """Run ``command`` with /bin/sh: exit 0 passing, 1 warning, anything else critical."""
    def probe() -> tuple[str, str]:
        try:
            done = subprocess.run(["/bin/sh", "-c", command], check=False, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return CRITICAL, f"Timed out ({timeout:g}s) running check"
        except OSError as exc:
            return CRITICAL, f"cannot run check: {exc}"
        output = (done.stdout + done.stderr).decode("utf-8", "replace")
        code = done.returncode
        verdict = PASSING if code == 0 else WARNING if code == 1 else CRITICAL
        return verdict, _cap(output)
    return probe


def make_probe(url: str | None, address: str | None, command: str | None,
               timeout: float) -> Probe | None:
    """The probe the flags ask for, or None; at most one kind may be given."""
    given = [flag for flag, value in (("-check-http", url), ("-check-tcp", address),
                                      ("-check-cmd", command)) if value]
    if len(given) > 1:
        raise CommandError(f"Error: give only one of {', '.join(given)}")
    if url:
        return http_probe(url, timeout)
    if address:
        return tcp_probe(address, timeout)
    if command:
        return cmd_probe(command, timeout)
    return None
