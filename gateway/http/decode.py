"""Request body decoding shared by handlers: JSON with Consul's error text."""

from __future__ import annotations

import json
from typing import Any

from agent.errors import InvalidRequest
from gateway.http.protocol import Request


def json_body(request: Request, required: bool = True) -> Any:
    body = request.body
    if not body.strip():
        if required:
            raise InvalidRequest("Request decode failed: unexpected EOF")
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Request decode failed: {exc}") from None


def flag(request: Request, name: str) -> bool:
    """A bare `?name` or `?name=true` style flag (anything but "false"/"0" counts as set)."""
    values = request.query.get(name)
    if values is None:
        return False
    return values[0].lower() not in ("false", "0")


def uint(request: Request, name: str, message: str) -> int | None:
    values = request.query.get(name)
    if values is None:
        return None
    try:
        value = int(values[0])
    except ValueError:
        raise InvalidRequest(message) from None
    if value < 0 or value >= 1 << 64:
        raise InvalidRequest(message)
    return value
