"""``wait=true``: the first change at or after ``waitIndex`` on a key, or under it with
``recursive=true``, answered at once when it already happened, else when it happens.

Waiting is the core's blocking read: ``KVList(key)`` with ``min_index`` parks on the store's
watches (no polling) until something under the key changed, or Consul's wait runs out (then it
parks again: etcd watches have no deadline). Cancelling the Deferred (the client went away)
cancels the parked read, which drops its watch and timer.

Events come from the current state, not from an event log: a key's ``modifiedIndex``, or the
tombstone of a deleted key, the smallest one at or after ``waitIndex`` (`Tree.first_event`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from gateway.etcd.reads import Reader, Snapshot

__all__ = ["watch"]


@inlineCallbacks
def watch(reader: Reader, kv: str, recursive: bool, wait_index: int):
    """Fires with the etcd event (``{"action", "node"}``) for ``kv``."""
    seen = 0
    while True:
        snapshot: Snapshot = yield reader.snapshot(kv, tombstones=True, min_index=seen)
        event: dict[str, Any] | None = snapshot.tree.first_event(kv, recursive, wait_index)
        if event is not None:
            return event
        seen = max(seen, snapshot.index)
