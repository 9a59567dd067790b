"""The agent's runtime configuration: one frozen value built from flags and files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

VERSION = "1.8.7"  # the Consul API version we answer as
WAYPOST_VERSION = "0.1.0"


@dataclass(frozen=True)
class Ports:
    http: int = 8500
    dns: int = 8600
    serf_lan: int = 8301
    serf_wan: int = 8302
    server: int = 8300
    grpc: int = -1


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    node_id: str
    datacenter: str = "dc1"
    domain: str = "consul."
    dev: bool = False
    server: bool = True
    bind_addr: str = "127.0.0.1"
    advertise_addr: str = ""
    client_addr: str = "127.0.0.1"
    http_addr: str = ""  # addresses.http overrides client_addr for the HTTP API
    ports: Ports = Ports()
    data_dir: str = ""
    log_level: str = "info"
    enable_syslog: bool = False
    node_meta: Mapping[str, str] = field(default_factory=dict)
    # Settings for frontends and plugins, by name; validated by their own schemas.
    plugins: Mapping[str, Any] = field(default_factory=dict)
    max_body_bytes: int = 8 * 1024 * 1024
    kv_max_value_size: int = 512 * 1024

    @property
    def advertise(self) -> str:
        return self.advertise_addr or self.bind_addr

    @property
    def server_rpc_addr(self) -> str:
        return f"{self.advertise}:{self.ports.server}"

    @property
    def pretty_json(self) -> bool:
        # Consul pretty-prints every JSON answer in dev mode.
        return self.dev
