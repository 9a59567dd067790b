"""Client-side locks and semaphores over the KV and session HTTP API, as Consul's `api` does.

Owns: :class:`LockSession` (a TTL session renewed from a thread until released),
:class:`KVLock` (one holder: ``<prefix>/.lock`` acquired with the session) and
:class:`KVSemaphore` (up to N holders: contender keys ``<prefix>/<session>`` plus a
``<prefix>/.lock`` key holding ``{"Limit": N, "Holders": {...}}`` updated by check-and-set).
Keys carry Consul's magic flag values, so a lock and a semaphore on one prefix notice each
other. Waiting is done with blocking queries, never by polling, except after an acquire
refused by a lock-delay (retried after 5s, as Consul's client does).

Plain blocking code (``http.client`` through :class:`AgentClient`, threads); no Twisted.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.cli.http_client import AgentClient, AgentError, quote_path

__all__ = ["LOCK_KEY", "KVLock", "KVSemaphore", "LockConflict", "LockSession"]

LOCK_FLAG_VALUE = 0x2DDCCBC058A50C18
SEMAPHORE_FLAG_VALUE = 0xE0F69A2BAA414DE0
LOCK_KEY = ".lock"  # Consul's DefaultSemaphoreKey, used by `consul lock` for both kinds
SESSION_TTL = 15.0
LOCK_RETRY_TIME = 5.0  # after an acquire refused by a lock-delay
MAX_WAIT = 15.0  # one blocking query at most, so a deadline is noticed
MONITOR_RETRY_TIME = 1.0


class LockConflict(Exception):
    """The prefix is in use in a way that does not match this lock (flags, limit)."""


def _ms(seconds: float) -> str:
    return f"{max(int(seconds * 1000), 1)}ms"


def _index(headers) -> int:
    try:
        return int(headers.get("x-consul-index", "0") or 0)
    except ValueError:
        return 0


class LockSession:
    """A session with a TTL, renewed every TTL/2 by a daemon thread until :meth:`destroy`.

    ``on_lost`` is called (from the thread) if the session disappears or cannot be renewed
    for a whole TTL.
    """

    def __init__(self, client: AgentClient, name: str, ttl: float = SESSION_TTL) -> None:
        self._client = client
        self._ttl = ttl
        body = json.dumps({"Name": name, "TTL": f"{int(ttl)}s"}).encode()
        response = client.request("PUT", "/v1/session/create", body=body)
        self.id: str = response.json()["ID"]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def keep_alive(self, on_lost: Callable[[], None]) -> None:
        def run() -> None:
            last_ok = time.monotonic()
            while not self._stop.wait(self._ttl / 2):
                try:
                    answer = self._client.request("PUT", f"/v1/session/renew/{self.id}",
                                                  allow=(404,))
                except AgentError:
                    if time.monotonic() - last_ok > self._ttl:
                        on_lost()
                        return
                    continue
                if answer.status == 404:
                    on_lost()
                    return
                last_ok = time.monotonic()
        self._thread = threading.Thread(target=run, name="session-renew", daemon=True)
        self._thread.start()

    def destroy(self) -> None:
        self._stop.set()
        self._client.request("PUT", f"/v1/session/destroy/{self.id}")


class _Waiter:
    """Blocking reads of one path that remember the index they have seen."""

    def __init__(self, client: AgentClient, path: str, query: list) -> None:
        self._client = client
        self._path = path
        self._query = query
        self.index = 0

    def read(self, deadline: float | None) -> Any:
        query = list(self._query)
        if self.index:
            wait = MAX_WAIT if deadline is None else min(MAX_WAIT, deadline - time.monotonic())
            query += [("index", str(self.index)), ("wait", _ms(wait))]
        response = self._client.request("GET", self._path, query=query, allow=(404,))
        new_index = _index(response.headers)
        self.index = new_index if new_index >= self.index else 0
        return None if response.status == 404 else response.json()


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


class KVLock:
    """Mutual exclusion on ``<prefix>/.lock``."""

    def __init__(self, client: AgentClient, prefix: str, session: str) -> None:
        self._client = client
        self.key = f"{prefix.rstrip('/')}/{LOCK_KEY}" if prefix.strip("/") else LOCK_KEY
        self._path = "/v1/kv/" + quote_path(self.key)
        self._session = session

    def _pair(self, data: Any) -> dict | None:
        pair = data[0] if data else None
        if pair is not None and pair.get("Flags") != LOCK_FLAG_VALUE:
            raise LockConflict("Existing key does not match lock use")
        return pair

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait until the key is ours; False when the deadline passes first."""
        waiter = _Waiter(self._client, self._path, [])
        while not _expired(deadline):
            pair = self._pair(waiter.read(deadline))
            if pair is not None and pair.get("Session"):
                if pair["Session"] == self._session:
                    return True
                continue  # held by another: block on the key until it changes
            query = [("acquire", self._session), ("flags", str(LOCK_FLAG_VALUE))]
            if self._client.request("PUT", self._path, query=query, body=b"").json() is True:
                return True
            # Refused: either someone was quicker, or a lock-delay is in effect.
            waiter.index = 0
            pair = self._pair(waiter.read(None))
            if pair is None or not pair.get("Session"):
                pause = LOCK_RETRY_TIME if deadline is None else min(
                    LOCK_RETRY_TIME, max(deadline - time.monotonic(), 0))
                time.sleep(pause)
                waiter.index = 0
        return False

    def held(self, data: Any) -> bool:
        pair = data[0] if data else None
        return pair is not None and pair.get("Session") == self._session

    def monitor_path(self) -> tuple[str, list]:
        return self._path, []

    def release(self) -> bool:
        query = [("release", self._session), ("flags", str(LOCK_FLAG_VALUE))]
        return self._client.request("PUT", self._path, query=query, body=b"").json() is True

    def cleanup(self) -> None:
        """Delete the key unless someone holds it (Consul's Lock.Destroy)."""
        pair = self._pair(self._client.get_json(self._path))
        if pair is not None and not pair.get("Session"):
            self._client.request("DELETE", self._path,
                                 query=[("cas", str(pair["ModifyIndex"]))])


class KVSemaphore:
    """Up to ``limit`` holders under ``<prefix>/``."""

    def __init__(self, client: AgentClient, prefix: str, limit: int, session: str) -> None:
        self._client = client
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._limit = limit
        self._session = session
        self.key = self._prefix + LOCK_KEY
        self._lock_path = "/v1/kv/" + quote_path(self.key)
        self._contender_path = "/v1/kv/" + quote_path(self._prefix + session)
        self._list_path = "/v1/kv/" + quote_path(self._prefix)

    def _state(self, pairs: list | None) -> tuple[dict | None, dict]:
        """(the .lock pair, its decoded {"Limit", "Holders"} with dead holders pruned)."""
        pairs = pairs or []
        lock_pair = next((p for p in pairs if p["Key"] == self.key), None)
        lock: dict = {"Limit": self._limit, "Holders": {}}
        if lock_pair is not None:
            if lock_pair.get("Flags") != SEMAPHORE_FLAG_VALUE:
                raise LockConflict("Existing key does not match semaphore use")
            if lock_pair.get("Value"):
                lock = json.loads(base64.b64decode(lock_pair["Value"]))
        if lock.get("Limit") != self._limit:
            raise LockConflict(f"semaphore limit conflict (lock: {lock.get('Limit')}, "
                               f"local: {self._limit})")
        alive = {p["Session"] for p in pairs if p.get("Session")}
        lock["Holders"] = {h: True for h in (lock.get("Holders") or {}) if h in alive}
        return lock_pair, lock

    def _put_lock(self, lock_pair: dict | None, lock: dict) -> bool:
        query = [("cas", str(lock_pair["ModifyIndex"] if lock_pair else 0)),
                 ("flags", str(SEMAPHORE_FLAG_VALUE))]
        body = json.dumps(lock, separators=(",", ":")).encode()
        return self._client.request("PUT", self._lock_path, query=query, body=body).json() is True

    def acquire(self, deadline: float | None = None) -> bool:
        query = [("acquire", self._session), ("flags", str(SEMAPHORE_FLAG_VALUE))]
        made = self._client.request("PUT", self._contender_path, query=query, body=b"").json()
        if made is not True:
            raise LockConflict("failed to make contender entry")
        waiter = _Waiter(self._client, self._list_path, [("recurse", None)])
        while not _expired(deadline):
            lock_pair, lock = self._state(waiter.read(deadline))
            if self._session in lock["Holders"]:
                return True
            if len(lock["Holders"]) >= self._limit:
                continue  # full: block until the prefix changes
            lock["Holders"][self._session] = True
            if self._put_lock(lock_pair, lock):
                return True
            waiter.index = 0  # lost a race: look again at once
        return False

    def held(self, data: Any) -> bool:
        return self._session in self._state(data)[1]["Holders"]

    def monitor_path(self) -> tuple[str, list]:
        return self._list_path, [("recurse", None)]

    def release(self) -> bool:
        while True:
            lock_pair, lock = self._state(self._client.get_json(self._list_path,
                                                                query=[("recurse", None)]))
            if lock_pair is None or self._session not in lock["Holders"]:
                break
            del lock["Holders"][self._session]
            if self._put_lock(lock_pair, lock):
                break
        self._client.request("DELETE", self._contender_path)
        return True

    def cleanup(self) -> None:
        """Delete the .lock key when nobody holds the semaphore any more."""
        lock_pair, lock = self._state(self._client.get_json(self._list_path,
                                                            query=[("recurse", None)]))
        if lock_pair is not None and not lock["Holders"]:
            self._client.request("DELETE", self._lock_path,
                                 query=[("cas", str(lock_pair["ModifyIndex"]))])


def monitor(client: AgentClient, lock: KVLock | KVSemaphore, on_lost: Callable[[], None],
            stop: threading.Event, retries: int = 3) -> threading.Thread:
    """Watch the lock from a daemon thread; call ``on_lost`` once it is no longer held."""
    path, query = lock.monitor_path()

    def run() -> None:
        waiter = _Waiter(client, path, query)
        failures = 0
        while not stop.is_set():
            try:
                data = waiter.read(None)
            except (AgentError, ValueError):
                failures += 1
                if failures > retries:
                    break
                time.sleep(MONITOR_RETRY_TIME)
                continue
            failures = 0
            if stop.is_set():
                return
            try:
                if not lock.held(data):
                    break
            except (LockConflict, KeyError, ValueError):
                break  # the lock's keys were rewritten by someone else: it is not ours
        if not stop.is_set():
            on_lost()
    thread = threading.Thread(target=run, name="lock-monitor", daemon=True)
    thread.start()
    return thread
