"""The gossip keyring of this agent: where it comes from, where it is kept, how it rotates.

Owns three things Consul's agent does around memberlist's keyring:

* loading at start (Consul's setupKeyrings): the keyring file `data_dir/serf/local.keyring`
  (a JSON list of base64 keys, primary first) wins over `encrypt`, with a warning; `encrypt`
  alone creates that file; `disable_keyring_file` (the default under `-dev`, as in Consul)
  keeps the key in memory only;
* persisting: every change (ours or one a peer's keyring query asks for) rewrites the file,
  0600, as Serf's writeKeyringFile does (`PersistentKeyring`);
* the operator's keyring operations (`KeyringOps`): one of Serf's internal key queries
  (`agent.gossip.serf.internal.start_key_query`) to the whole pool, its answers collected
  until every live member answered or the query timed out (Serf's KeyManager).

Keys are secrets: never logged, never in exception messages (only base64 keys go into the
answers of list queries, as Serf's do).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import txaio
from twisted.internet.defer import Deferred

from agent.gossip.security import Keyring, KeyringError
from agent.gossip.serf.errors import SerfError
from agent.gossip.serf.events import MemberStatus, QueryDone, QueryReply
from agent.gossip.serf.internal import (
    INSTALL_KEY, LIST_KEYS, REMOVE_KEY, USE_KEY, KeyringSummary, start_key_query)

txaio.use_twisted()

LAN_KEYRING_FILE = os.path.join("serf", "local.keyring")  # Consul's SerfLANKeyring
OPERATIONS = (LIST_KEYS, INSTALL_KEY, USE_KEY, REMOVE_KEY)
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


class KeyringFileError(ValueError):
    """The keyring file cannot be read, written or understood (the message names the file,
    never a key)."""


def go_b64decode(text: str) -> bytes:
    """base64.StdEncoding.DecodeString as Go does it, with Go's error text ("illegal base64
    data at input byte N"): Consul reports that text for a malformed key."""
    src = text.encode("utf-8", "surrogatepass")  # Go sees bytes; any str encodes
    si, n = 0, len(src)
    while si < n:
        quantum = 0
        while quantum < 4:
            if si == n:
                if quantum == 0:
                    break
                raise ValueError(f"illegal base64 data at input byte {si - quantum}")
            c = src[si]
            si += 1
            if c in (0x0A, 0x0D):  # Go skips newlines anywhere
                continue
            if c in _B64:
                quantum += 1
                continue
            if c != 0x3D or quantum < 2:  # not "=", or "=" too early
                raise ValueError(f"illegal base64 data at input byte {si - 1}")
            if quantum == 2:  # a second "=" must follow
                while si < n and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == n:
                    raise ValueError(f"illegal base64 data at input byte {n}")
                if src[si] != 0x3D:
                    raise ValueError(f"illegal base64 data at input byte {si - 1}")
                si += 1
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si < n:
                raise ValueError(f"illegal base64 data at input byte {si}")
            quantum = 4
    cleaned = bytes(c for c in src if c not in (0x0A, 0x0D))
    try:
        return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
    except binascii.Error as exc:  # not reached after the walk above; kept as a backstop
        raise ValueError("illegal base64 data at input byte 0") from exc


def _memberlist_words(err: KeyringError) -> str:
    # memberlist words these with a capital ("Removing the primary key is not allowed"), and
    # the text travels to every querier (Consul's CLI prints it).
    text = str(err)
    return text[:1].upper() + text[1:] if text.startswith(("removing", "requested", "empty"))\
        else text


class PersistentKeyring(Keyring):
    """A keyring that rewrites its file after every change (None: memory only)."""

    def __init__(self, keys=(), primary: bytes | None = None, path: str | None = None) -> None:
        self.path = None  # the initial keys come from the file or `encrypt`: nothing to write
        super().__init__(keys, primary)
        self.path = path

    def _changed(self) -> None:
        if self.path is None:
            return
        try:
            write_keyring_file(self.path, self.keys)
        except KeyringFileError as exc:
            # The ring did change in memory (as in Serf); the querier hears about the file.
            raise KeyringError(str(exc)) from None

    def add_key(self, key: bytes) -> None:
        try:
            super().add_key(key)
        except KeyringError as exc:
            raise KeyringError(_memberlist_words(exc)) from None
        self._changed()

    def use_key(self, key: bytes) -> None:
        try:
            super().use_key(key)
        except KeyringError as exc:
            raise KeyringError(_memberlist_words(exc)) from None
        self._changed()

    def remove_key(self, key: bytes) -> None:
        try:
            super().remove_key(key)
        except KeyringError as exc:
            raise KeyringError(_memberlist_words(exc)) from None
        self._changed()


def write_keyring_file(path: str, keys: tuple[bytes, ...] | list[bytes]) -> None:
    """The keys as Serf writes them: a JSON list of base64 strings, primary first, 0600."""
    body = json.dumps([base64.b64encode(k).decode() for k in keys], indent=2)
    try:
        Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a crash leaves the old ring or the new one, never half
    except OSError as exc:
        raise KeyringFileError(f"Failed to write keyring file: {exc.strerror}") from None


def read_keyring_file(path: str) -> list[bytes]:
    """The keys of a keyring file, primary first (Consul's loadKeyringFile)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise KeyringFileError(f"{path}: {exc.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise KeyringFileError(f"{path}: not a JSON list of base64 keys") from None
    if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
        raise KeyringFileError(f"{path}: not a JSON list of base64 keys")
    if not data:
        raise KeyringFileError(f"no keys present in keyring: {path}")
    keys = []
    for i, text in enumerate(data):
        try:
            keys.append(go_b64decode(text))
        except ValueError as exc:
            raise KeyringFileError(f"{path}: key {i}: {exc}") from None
    return keys


def keyring_file_of(config: Any, name: str = LAN_KEYRING_FILE) -> str | None:
    """Where this agent keeps a pool's keyring (`name` under data_dir: the LAN's by default);
    None when it keeps none (no data_dir, or `disable_keyring_file`, which `-dev` turns on as
    Consul's dev mode does)."""
    disabled = config.settings.get("disable_keyring_file", config.dev)
    if disabled or not config.data_dir:
        return None
    return os.path.join(config.data_dir, name)


def load_keyring(config: Any, name: str = LAN_KEYRING_FILE,
                 pool: str = "LAN") -> PersistentKeyring | None:
    """A pool's keyring at start, by Consul's rule: its file if there is one (then `encrypt`
    is only warned about), else `encrypt` (written to a new file). None: no encryption."""
    path = keyring_file_of(config, name)
    if path is not None and os.path.exists(path):
        if config.encrypt:
            txaio.make_logger().warn("WARNING: {pool} keyring exists but -encrypt given, using "
                                     "keyring", pool=pool)
        keys = read_keyring_file(path)
    elif config.encrypt:
        keys = [base64.b64decode(config.encrypt, validate=True)]  # validated with the config
        if path is not None:
            write_keyring_file(path, keys)
    else:
        return None
    try:
        return PersistentKeyring(keys=keys, primary=keys[0], path=path)
    except KeyringError as exc:
        raise KeyringFileError(f"{path or 'encrypt'}: {exc}") from None


# --- the operator's keyring operations ------------------------------------------------------

@dataclass(frozen=True)
class KeyringOutcome:
    """One pool's answer to a keyring operation (Consul's KeyringResponse)."""

    datacenter: str
    summary: KeyringSummary
    error: str | None  # Serf's verdict ("1/3 nodes reported failure"), None when all is well


class KeyringOps:
    """Runs keyring queries on one pool. `listeners` is where the pool's owner delivers the
    QueryReply/QueryDone events of queries this node started."""

    def __init__(self, pool: Any, listeners: list[Callable[[Any], None]],
                 datacenter: str) -> None:
        self._pool = pool
        self._datacenter = datacenter
        self._waiting: dict[tuple[int, int], tuple[KeyringSummary, Deferred]] = {}
        listeners.append(self._query_event)

    def run(self, op: str, key: str = "", relay_factor: int = 0) -> Deferred:
        """Run `op` (one of OPERATIONS) with a base64 `key`; fires with a KeyringOutcome.
        A key that is not base64 is Consul's error before any query goes out."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown keyring operation {op!r}")
        d: Deferred = Deferred()
        summary = KeyringSummary(num_nodes=0)
        try:
            raw = go_b64decode(key)
        except ValueError as exc:
            d.callback(KeyringOutcome(self._datacenter, summary, str(exc)))
            return d
        try:
            handle = start_key_query(self._pool.serf, op, raw, relay_factor)
        except SerfError as exc:
            d.callback(KeyringOutcome(self._datacenter, summary, str(exc)))
            return d
        # memberlist's NumMembers: every member not dead or gone.
        summary.num_nodes = sum(1 for m in self._pool.members()
                                if m.status in (MemberStatus.ALIVE, MemberStatus.LEAVING))
        self._waiting[(handle.ltime, handle.id)] = (summary, d)
        return d

    def _query_event(self, event: Any) -> None:
        if not isinstance(event, (QueryReply, QueryDone)):
            return
        key = (event.ltime, event.id)
        waiting = self._waiting.get(key)
        if waiting is None:
            return
        summary, d = waiting
        if isinstance(event, QueryReply):
            summary.add(event.source, event.payload)
            if summary.num_resp < summary.num_nodes:
                return  # Serf returns early once every node answered
        del self._waiting[key]
        d.callback(KeyringOutcome(self._datacenter, summary, summary.error()))
