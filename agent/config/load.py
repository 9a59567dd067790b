"""Builds the `AgentConfig` from config files and command-line values, as Consul 1.8 does.

Sources, merged in this order (Consul's builder):

1. ``-dev`` defaults (`DEV_DEFAULTS`), when ``dev``;
2. the list-valued flags (``-recursor``, ``-join``, ``-retry-join``): Consul merges them before
   the files so that they come *first* in the lists;
3. the files: each ``-config-file`` (a directory given there counts as a ``-config-dir``), then
   each ``-config-dir``'s ``*.json`` files in name order (sub-directories are skipped);
4. every other flag, so flags win over files.

Merge rules are Consul's (agent/config/merge.go), read off ``schemas/agent-config.json``: an
object whose keys the schema lists (``ports``, ``addresses``, ``dns_config``, ``acl``, ``limits``,
...) merges key by key, recursively; a user map (``node_meta``, ``dns_config.service_ttl``) is
replaced by a later *non-empty* one; a list is appended to (``services``, ``checks``,
``watches``, ``start_join``, ``retry_join``, ``recursors``, ...); anything else is replaced.
``plugins`` (ours, ``x-merge: deep``) merges plugin by plugin and key by key.

A bad source stops start-up with a `ConfigError` naming the file and the line and column (JSON
syntax) or the JSON pointer (a value). `load_agent_config` re-reads everything, so a reload
(SIGHUP) calls it again with the same arguments.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.config.model import DEFAULT_LIMITS, AgentConfig, DNSConfig, Ports, SOAConfig
from agent.config.validate import SCRIPTS_DISABLED, ConfigError, Source, SourceChecker
from agent.durations import parse_duration
from agent.schemas import SchemaSet

__all__ = [
    "DEV_DEFAULTS",
    "UNSUPPORTED_KEYS",
    "ConfigError",
    "build_config",
    "config_files",
    "load_agent_config",
    "read_file",
]

COMMAND_LINE = "command line"

# Consul's dev-mode defaults (agent/config/default.go DevSource) that mean something here.
DEV_DEFAULTS: Mapping[str, Any] = {
    "bind_addr": "127.0.0.1",
    "log_level": "debug",
    "server": True,
    "ui": True,
    "ports": {"grpc": 8502},
}

# Keys accepted and kept in the model that have no effect yet; when a user sets one (in a file
# or by flag) it is listed in AgentConfig.unsupported and logged at start-up. Remove a key here
# when its feature lands. (services, checks, script checks and watches are built: agent.py
# registers config.services/checks, gateway/watch runs config.watches.)
UNSUPPORTED_KEYS = frozenset({
    "acl", "bootstrap", "bootstrap_expect", "encrypt", "performance", "retry_join",
    "start_join", "telemetry", "ui", "ui_dir",
})
# Of `limits`, only these have an effect; the others are listed as "limits.<key>".
SUPPORTED_LIMITS = frozenset({"kv_max_value_size"})


# -- reading --------------------------------------------------------------------------------


def config_files(files: Iterable[str], dirs: Iterable[str]) -> list[Path]:
    """The files to read, in merge order: ``files`` (a directory expands), then each dir's."""
    paths: list[Path] = []
    for name in files:
        path = Path(name)
        paths.extend(_dir_files(path) if path.is_dir() else [path])
    for name in dirs:
        path = Path(name)
        if not path.is_dir():
            raise ConfigError(f"{name}: not a directory")
        paths.extend(_dir_files(path))
    for path in paths:
        if path.suffix == ".hcl":
            raise ConfigError(f"{path}: HCL config files are not supported yet; use JSON")
    return paths


def _dir_files(directory: Path) -> list[Path]:
    # Consul reads .json and .hcl files (we refuse the latter), sorted by name; symlinks are
    # followed, sub-directories skipped.
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise ConfigError(f"{directory}: {exc.strerror}") from None
    return [p for p in entries if p.suffix in (".json", ".hcl") and p.is_file()]


def read_file(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; an empty file is an empty object, as in Consul."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc.reason}") from None
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}:1:1: the top level must be a JSON object")
    return doc


# -- merging --------------------------------------------------------------------------------


def merge(a: Any, b: Any, schema: Mapping[str, Any], checker: SourceChecker) -> Any:
    """``b`` merged over ``a`` by Consul's rules for a value that ``schema`` describes."""
    schema = checker.resolve(schema)
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return b
    if schema.get("x-merge") == "deep":
        return _deep_merge(a, b)
    if "properties" not in schema:  # a user map: the later one if not empty
        return b if b else a
    properties = schema["properties"]
    out = dict(a)
    for key, value in b.items():
        out[key] = merge(a[key], value, properties.get(key, {}), checker) if key in a else value
    return out


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        old = out.get(key)
        out[key] = _deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) \
            else value
    return out


def _unsupported(sources: Iterable[Source]) -> tuple[str, ...]:
    found = set()
    for source in sources:
        found.update(key for key in source.doc if key in UNSUPPORTED_KEYS)
        found.update(f"limits.{key}" for key in source.doc.get("limits", {})
                     if key not in SUPPORTED_LIMITS)
    return tuple(sorted(found))


# -- building -------------------------------------------------------------------------------


def load_agent_config(files: list[str], dirs: list[str], flags: Mapping[str, Any],
                      dev: bool) -> AgentConfig:
    """Read every file (``files``, then each of ``dirs``) and ``flags``, and build the config.

    ``flags`` has the shape of a config file (Consul's keys); ``None`` and empty lists mean
    "not given". The node ID is random when not configured, so a reload should keep the
    running agent's.
    """
    return build_config(config_files(files, dirs), flags, dev)


def build_config(files: Iterable[Path | str], flags: Mapping[str, Any], dev: bool) -> AgentConfig:
    """Like `load_agent_config`, for an already expanded list of files."""
    checker = SourceChecker(SchemaSet())
    given = {k: v for k, v in flags.items() if v is not None and v != [] and v != ()}
    flag_source = checker.check(COMMAND_LINE, {k: list(v) if isinstance(v, tuple) else v
                                               for k, v in given.items()})
    paths = [Path(f) for f in files]
    file_sources = [checker.check(str(path), read_file(path)) for path in paths]

    head = [dict(DEV_DEFAULTS)] if dev else []
    head.append({k: v for k, v in flag_source.doc.items() if isinstance(v, list)})
    tail = {k: v for k, v in flag_source.doc.items() if not isinstance(v, list)}
    merged: dict[str, Any] = {}
    for doc in [*head, *(s.doc for s in file_sources), tail]:
        merged = merge(merged, doc, checker.schema, checker)

    user_sources = [*file_sources, flag_source]
    services = [(d, s.name, label) for s in file_sources for d, label in s.services]
    checks = [(c, s.name, label) for s in file_sources for c, label in s.checks]
    config = _build(merged, dev)
    _check(config, services, checks)
    return replace(
        config,
        services=tuple(d for d, _, _ in services),
        checks=tuple(c for c, _, _ in checks),
        config_sources=tuple(str(p) for p in paths),
        unsupported=_unsupported(user_sources),
    )


def _build(c: Mapping[str, Any], dev: bool) -> AgentConfig:
    server = c.get("server", True)  # Waypost has no client mode yet: a server unless told
    bootstrap, expect = c.get("bootstrap", False), c.get("bootstrap_expect", 0)
    if expect == 1:  # Consul: the same as bootstrap mode
        bootstrap, expect = True, 0
    limits = {**DEFAULT_LIMITS, **c.get("limits", {})}
    for key in ("https_handshake_timeout", "rpc_handshake_timeout"):
        if isinstance(limits[key], str):
            limits[key] = parse_duration(limits[key])
    addresses = c.get("addresses", {})
    enable_script_checks = c.get("enable_script_checks", False)
    recursors: list[str] = []
    for entry in c.get("recursors", ()):
        for address in entry.split():  # Consul splits and de-duplicates
            if address not in recursors:
                recursors.append(address)
    return AgentConfig(
        node_name=c.get("node_name") or socket.gethostname(),
        node_id=c.get("node_id") or str(uuid.uuid4()),
        datacenter=c.get("datacenter", "dc1"),
        domain=c.get("domain", "consul."),
        alt_domain=c.get("alt_domain", ""),
        dev=dev,
        server=server,
        bootstrap=bootstrap,
        bootstrap_expect=expect,
        bind_addr=c.get("bind_addr", "127.0.0.1"),
        advertise_addr=c.get("advertise_addr", ""),
        client_addr=c.get("client_addr", "127.0.0.1"),
        http_addr=addresses.get("http", ""),
        dns_addr=addresses.get("dns", ""),
        unix_sockets=dict(c.get("unix_sockets", {})),
        ports=Ports(**c.get("ports", {})),
        data_dir=c.get("data_dir", ""),
        log_level=c.get("log_level", "info"),
        enable_syslog=c.get("enable_syslog", False),
        pid_file=c.get("pid_file", ""),
        node_meta=dict(c.get("node_meta", {})),
        plugins=dict(c.get("plugins", {})),
        kv_max_value_size=limits["kv_max_value_size"],
        start_join=tuple(c.get("start_join", ())),
        retry_join=tuple(c.get("retry_join", ())),
        encrypt=c.get("encrypt", ""),
        ui=c.get("ui", False),
        ui_dir=c.get("ui_dir", ""),
        recursors=tuple(recursors),
        dns_config=_dns_config(c.get("dns_config", {})),
        enable_script_checks=enable_script_checks,
        enable_local_script_checks=c.get("enable_local_script_checks", enable_script_checks),
        leave_on_terminate=c.get("leave_on_terminate", not server),
        skip_leave_on_interrupt=c.get("skip_leave_on_interrupt", server),
        disable_update_check=c.get("disable_update_check", False),
        acl=dict(c.get("acl", {})),
        performance=dict(c.get("performance", {})),
        telemetry=dict(c.get("telemetry", {})),
        limits=limits,
        watches=tuple(dict(w) for w in c.get("watches", ())),
    )


def _dns_config(d: Mapping[str, Any]) -> DNSConfig:
    defaults = DNSConfig()
    durations = {key: parse_duration(d[key]) for key in
                 ("max_stale", "node_ttl", "recursor_timeout", "cache_max_age") if key in d}
    plain = {key: d[key] for key in
             ("allow_stale", "only_passing", "enable_truncate", "udp_answer_limit",
              "a_record_limit", "disable_compression", "use_cache",
              "enable_additional_node_meta_txt") if key in d}
    soa = SOAConfig(**d.get("soa", {})) if "soa" in d else defaults.soa
    service_ttl = {name: parse_duration(ttl) for name, ttl in d.get("service_ttl", {}).items()}
    return DNSConfig(**plain, **durations, service_ttl=service_ttl, soa=soa)


def _check(config: AgentConfig, services: list, checks: list) -> None:
    """Rules across sources, with Consul's messages (its builder's validate, agent start)."""
    for name in ("datacenter", "node_name", "bind_addr", "client_addr"):
        if not getattr(config, name):
            raise ConfigError(f"invalid {name}: must be a non-empty string")
    if config.bootstrap_expect > 0 and config.bootstrap:
        raise ConfigError("'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive")
    if config.bootstrap and not config.server:
        raise ConfigError("'bootstrap = true' requires server mode")
    if config.bootstrap_expect > 0 and not config.server:
        raise ConfigError("'bootstrap_expect > 0' requires server mode")
    if config.bootstrap_expect > 0 and config.dev:
        raise ConfigError("'bootstrap_expect > 0' not allowed in dev mode")
    if not config.enable_local_script_checks:
        # Definitions in config files are "local": Consul refuses their script checks at start.
        for definition, source, label in services:
            if any(_is_script(check) for check in definition.checks):
                raise ConfigError(f"{source}: {label}: {SCRIPTS_DISABLED}")
        for check, source, label in checks:
            if _is_script(check):
                raise ConfigError(f"{source}: {label}: {SCRIPTS_DISABLED}")


def _is_script(check) -> bool:
    return bool(check.args) or check.type == "script"
