"""The agent's runtime configuration: one frozen value built from flags and files.

`agent.config.load` builds it (Consul's defaults, merge rules and checks); everything else only
reads it. Durations are seconds (float). Settings of features that are not built yet are kept
in `AgentConfig.settings` anyway, and `AgentConfig.unsupported` names the ones a user set, so
the agent can say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.definitions import CheckSpec, ServiceDefinition

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
class SOAConfig:
    """The SOA record's timers (seconds) in DNS answers, Consul's defaults."""

    refresh: int = 3600
    retry: int = 600
    expire: int = 86400
    min_ttl: int = 0


@dataclass(frozen=True)
class DNSConfig:
    """``dns_config``, with Consul 1.8's defaults; durations in seconds."""

    allow_stale: bool = True
    max_stale: float = 87600 * 3600.0
    node_ttl: float = 0.0
    # Service name -> TTL; a key ending in "*" matches names with that prefix ("*" matches all).
    service_ttl: Mapping[str, float] = field(default_factory=dict)
    only_passing: bool = False
    enable_truncate: bool = False
    udp_answer_limit: int = 3
    a_record_limit: int = 0
    recursor_timeout: float = 2.0
    disable_compression: bool = False
    use_cache: bool = False
    cache_max_age: float = 0.0
    soa: SOAConfig = SOAConfig()
    enable_additional_node_meta_txt: bool = True

    def ttl_for_service(self, name: str) -> float:
        """The TTL of a service's DNS answers, as Consul picks it.

        An exact key wins; otherwise the wildcard key with the longest prefix of ``name``
        ("web*" before "*"); otherwise 0.
        """
        exact = self.service_ttl.get(name)
        if exact is not None and not name.endswith("*"):
            return exact
        best, best_len = 0.0, -1
        for key, ttl in self.service_ttl.items():
            if key.endswith("*") and name.startswith(key[:-1]) and len(key) - 1 > best_len:
                best, best_len = ttl, len(key) - 1
        return best


# Consul's `limits` defaults; durations in seconds, rpc_rate -1 means unlimited.
DEFAULT_LIMITS: Mapping[str, Any] = {
    "http_max_conns_per_client": 200,
    "https_handshake_timeout": 5.0,
    "rpc_handshake_timeout": 5.0,
    "rpc_rate": -1,
    "rpc_max_burst": 1000,
    "rpc_max_conns_per_client": 100,
    "kv_max_value_size": 512 * 1024,
    "txn_max_req_len": 512 * 1024,
}


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    node_id: str
    datacenter: str = "dc1"
    domain: str = "consul."
    alt_domain: str = ""
    dev: bool = False
    server: bool = True
    bootstrap: bool = False
    bootstrap_expect: int = 0
    bind_addr: str = "127.0.0.1"
    # The resolved advertise address ("" means bind_addr); templates are evaluated at load.
    advertise_addr: str = ""
    client_addr: str = "127.0.0.1"  # the first of client_addrs
    http_addr: str = ""  # addresses.http overrides client_addr for the HTTP API (first one)
    dns_addr: str = ""  # addresses.dns overrides client_addr for DNS (first one)
    # Every address configured (space-separated lists, templates evaluated); "unix:///path"
    # is possible in http_addrs. Empty tuples mean "not configured" (client_addr applies).
    client_addrs: tuple[str, ...] = ("127.0.0.1",)
    http_addrs: tuple[str, ...] = ()
    dns_addrs: tuple[str, ...] = ()
    # unix_sockets {mode, user, group}: applied to the socket file of a "unix://" address.
    unix_sockets: Mapping[str, str] = field(default_factory=dict)
    ports: Ports = Ports()
    data_dir: str = ""
    log_level: str = "info"  # lower case: trace, debug, info, warn or error
    enable_syslog: bool = False
    pid_file: str = ""  # written by the runner when set
    node_meta: Mapping[str, str] = field(default_factory=dict)
    # Settings for frontends and plugins, by name; validated by their own schemas.
    plugins: Mapping[str, Any] = field(default_factory=dict)
    max_body_bytes: int = 8 * 1024 * 1024
    kv_max_value_size: int = 512 * 1024  # limits.kv_max_value_size
    start_join: tuple[str, ...] = ()
    retry_join: tuple[str, ...] = ()
    encrypt: str = ""
    ui: bool = False
    ui_dir: str = ""
    recursors: tuple[str, ...] = ()
    dns_config: DNSConfig = DNSConfig()
    enable_script_checks: bool = False
    enable_local_script_checks: bool = False
    leave_on_terminate: bool = False
    skip_leave_on_interrupt: bool = True
    disable_update_check: bool = False
    # As written in the files (snake_case keys, durations as strings): not used yet.
    acl: Mapping[str, Any] = field(default_factory=dict)
    performance: Mapping[str, Any] = field(default_factory=dict)
    telemetry: Mapping[str, Any] = field(default_factory=dict)
    # DEFAULT_LIMITS overlaid with the configured values.
    limits: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    # Registered at start-up, in file order (a file's `service` after its `services`).
    services: tuple[ServiceDefinition, ...] = ()
    checks: tuple[CheckSpec, ...] = ()
    # Checked watch definitions, keys as Consul spells them ("type", "handler_type", ...).
    watches: tuple[Mapping[str, Any], ...] = ()
    # The config files read, in merge order (a reload re-reads the files and directories).
    config_sources: tuple[str, ...] = ()
    # Keys a user set that have no effect yet ("acl", "limits.rpc_rate", ...), sorted.
    unsupported: tuple[str, ...] = ()
    # Other things to tell the operator at start-up: deprecated spellings, Consul Enterprise
    # keys, skipped empty files, addresses beyond the first one.
    warnings: tuple[str, ...] = ()
    # Every setting as merged from the sources (Consul's snake_case keys, durations as
    # written, deprecated spellings moved to their keys; no service or check definitions):
    # what /v1/agent/self reports for settings without a field of their own here.
    settings: Mapping[str, Any] = field(default_factory=dict)

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
