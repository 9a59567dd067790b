"""The two ways Serf says no: bad bytes from the network, and a local request it refuses."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

from agent.gossip.gomsgpack import GossipDecodeError

_T = TypeVar("_T")


class SerfDecodeError(GossipDecodeError):
    """Bytes that are not a valid Serf message (or tag block, or filter)."""


class SerfError(Exception):
    """A local request Serf refuses (size limits, wrong state, stale query)."""


def serf_decoder(decode: Callable[[bytes], _T]) -> Callable[[bytes], _T]:
    """Let a Serf decoder raise only SerfDecodeError: the shared go-msgpack rules raise their
    base GossipDecodeError, and Serf's callers tell Serf junk apart by this subclass."""

    @functools.wraps(decode)
    def wrapper(data: bytes) -> _T:
        try:
            return decode(data)
        except SerfDecodeError:
            raise
        except GossipDecodeError as exc:
            raise SerfDecodeError(str(exc)) from None

    return wrapper


__all__ = ["SerfDecodeError", "SerfError", "serf_decoder"]
