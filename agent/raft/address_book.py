"""Where the other servers are: their server-port addresses (Raft peers are node IDs), node
names and Serf addresses, kept in `data_dir/raft/servers.json` so a restarted server can reach
its peers and rejoin the pool before gossip has told it anything.

Every address goes through `set`, which tells the transport: an address known from the file,
a snapshot, peers.json or gossip is one the next message can use.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import txaio

txaio.use_twisted()


class AddressBook:
    log = txaio.make_logger()

    def __init__(self, own_id: str, own_address: str, path: str | None,
                 dial: Callable[[str, tuple[str, int]], None]) -> None:
        """`dial(server_id, (host, port))` tells the transport where a peer is."""
        self._own = own_id
        self._path = path
        self._dial = dial
        self.addresses: dict[str, str] = {own_id: own_address}  # ID -> "host:port"
        self.names: dict[str, str] = {}  # ID -> node name
        self.serf: dict[str, str] = {}  # ID -> Serf LAN "host:port"

    @property
    def serf_addresses(self) -> list[str]:
        """Where the other servers gossip (a restarted server rejoins through them)."""
        return [a for sid, a in sorted(self.serf.items()) if sid != self._own]

    def set(self, server_id: str, address: str, name: str = "", *, save: bool = True) -> None:
        if name and self.names.get(server_id) != name:
            self.names[server_id] = name
            changed = True
        else:
            changed = False
        if server_id != self._own and self.addresses.get(server_id) != address:
            host, sep, port = address.rpartition(":")
            if not sep or not port.isdigit():
                self.log.warn("ignoring the address {address!r} of server {sid}",
                              address=address, sid=server_id)
                return
            self.addresses[server_id] = address
            self._dial(server_id, (host, int(port)))
            changed = True
        if changed and save:
            self.save()

    def set_serf(self, server_id: str, serf_address: str) -> None:
        if self.serf.get(server_id) != serf_address:
            self.serf[server_id] = serf_address
            self.save()

    def load(self) -> None:
        if not self._path:
            return
        try:
            with open(self._path, encoding="utf-8") as f:
                servers = json.load(f).get("servers") or {}
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as exc:
            self.log.warn("ignoring {path}: {exc}", path=self._path, exc=exc)
            return
        for sid, entry in servers.items():
            if not isinstance(entry, dict):
                continue
            name = entry.get("name") if isinstance(entry.get("name"), str) else ""
            if isinstance(entry.get("address"), str):
                self.set(sid, entry["address"], name, save=False)
            if isinstance(entry.get("serf"), str):
                self.serf[sid] = entry["serf"]

    def save(self) -> None:
        if not self._path:
            return
        servers = {sid: {"address": a, "name": self.names.get(sid, ""),
                         **({"serf": self.serf[sid]} if sid in self.serf else {})}
                   for sid, a in self.addresses.items()}
        tmp = self._path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"servers": servers}, f)
            os.replace(tmp, self._path)
        except OSError as exc:
            self.log.warn("cannot save {path}: {exc}", path=self._path, exc=exc)
