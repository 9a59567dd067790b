"""Builds the `AgentConfig` from config files and command-line values, as Consul 1.8 does.

Sources, merged in this order (Consul's builder):

1. ``-dev`` defaults (`DEV_DEFAULTS`), when ``dev``;
2. the list-valued flags (``-recursor``, ``-join``, ``-retry-join``): Consul merges them before
   the files so that they come *first* in the lists;
3. the files: each ``-config-file`` (a directory given there counts as a ``-config-dir``), then
   each ``-config-dir``'s ``*.json`` and ``*.hcl`` files in name order (sub-directories are
   skipped); `agent.config.read` parses one file;
4. every other flag, so flags win over files.

Keys match case-insensitively and deprecated spellings move to their keys, as in Consul. Then
addresses are checked and templates evaluated (`agent.config.addresses`), Consul's rules across
sources are applied, settings Waypost cannot honour safely refuse (`agent.config.safety`), and
the keys without effect are listed (`agent.config.support`).

Merge rules are Consul's (agent/config/merge.go), read off ``schemas/agent-config.json``: an
object whose keys the schema lists (``ports``, ``addresses``, ``dns_config``, ``acl``, ``limits``,
...) merges key by key, recursively; a user map (``node_meta``, ``dns_config.service_ttl``) is
replaced by a later *non-empty* one; a list is appended to (``services``, ``checks``,
``watches``, ``start_join``, ``retry_join``, ``recursors``, ...); anything else is replaced.
``plugins`` (ours, ``x-merge: deep``) merges plugin by plugin and key by key.

A bad source stops start-up with a `ConfigError` naming the file and the line and column (syntax)
or the JSON pointer (a value). `load_agent_config` re-reads everything, so a reload
(SIGHUP) calls it again with the same arguments.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from agent.config import addresses
from agent.config.interfaces import IfAddr, system_interfaces
from agent.config.node_id import resolve_node_id
from agent.config.model import DEFAULT_LIMITS, AgentConfig, DNSConfig, Ports, SOAConfig
from agent.config.read import EmptyFile, file_format, read_file
from agent.config.safety import check_safety
from agent.config.support import scan_sources, translate_deprecated
from agent.config.validate import (
    SCRIPTS_DISABLED,
    ConfigError,
    Source,
    SourceChecker,
    normalize_log_level,
)
from agent.durations import parse_duration
from agent.schemas import SchemaSet

__all__ = [
    "DEV_DEFAULTS",
    "ConfigError",
    "build_config",
    "config_files",
    "load_agent_config",
    "read_file",
]

COMMAND_LINE = "command line"
_PORT_FIELDS = frozenset(f.name for f in fields(Ports))
PluginCheck = Callable[[Mapping[str, Any]], None]

# Consul's dev-mode defaults (agent/config/default.go DevSource) that mean something here.
DEV_DEFAULTS: Mapping[str, Any] = {
    "bind_addr": "127.0.0.1",
    "log_level": "DEBUG",  # as Consul spells it (its DebugConfig shows it so)
    "server": True,
    "ui": True,
    "ports": {"grpc": 8502},
}

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
    return paths


def _dir_files(directory: Path) -> list[Path]:
    # Consul reads .json and .hcl files, sorted by name; symlinks are followed,
    # sub-directories skipped.
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise ConfigError(f"{directory}: {exc.strerror}") from None
    return [p for p in entries if p.suffix in (".json", ".hcl") and p.is_file()]


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


# -- building -------------------------------------------------------------------------------


def load_agent_config(files: list[str], dirs: list[str], flags: Mapping[str, Any],
                      dev: bool, *, config_format: str | None = None,
                      plugin_check: PluginCheck | None = None,
                      interfaces: Callable[[], list[IfAddr]] = system_interfaces) -> AgentConfig:
    """Read every file (``files``, then each of ``dirs``) and ``flags``, and build the config.

    ``flags`` has the shape of a config file (Consul's keys); ``None`` and empty lists mean
    "not given". The node ID is random when not configured, so a reload should keep the
    running agent's. ``config_format`` (``-config-format``) says how to read a file named
    neither ``.json`` nor ``.hcl``; ``plugin_check``, when given, checks one plugin's settings
    (``{name: settings}``) and raises ``ValueError`` for an unknown plugin or bad settings,
    which is reported with the file that set them; ``interfaces`` lists this machine's
    addresses for go-sockaddr templates.
    """
    return build_config(config_files(files, dirs), flags, dev, config_format=config_format,
                        plugin_check=plugin_check, interfaces=interfaces)


def build_config(files: Iterable[Path | str], flags: Mapping[str, Any], dev: bool, *,
                 config_format: str | None = None,
                 plugin_check: PluginCheck | None = None,
                 interfaces: Callable[[], list[IfAddr]] = system_interfaces) -> AgentConfig:
    """Like `load_agent_config`, for an already expanded list of files."""
    checker = SourceChecker(SchemaSet())
    given = {k: v for k, v in flags.items() if v is not None and v != [] and v != ()}
    flag_source = checker.check(COMMAND_LINE, {k: list(v) if isinstance(v, tuple) else v
                                               for k, v in given.items()})
    paths = [Path(f) for f in files]
    warnings: list[str] = []
    file_sources: list[Source] = []
    for path in paths:
        fmt = file_format(path, config_format)
        try:
            doc = read_file(path, fmt)
        except EmptyFile:
            warnings.append(f"{path}: the file is empty; skipped")
            continue
        file_sources.append(checker.check(str(path), doc, hcl=fmt == "hcl"))

    head = [dict(DEV_DEFAULTS)] if dev else []
    head.append({k: v for k, v in flag_source.doc.items() if isinstance(v, list)})
    tail = {k: v for k, v in flag_source.doc.items() if not isinstance(v, list)}
    merged: dict[str, Any] = {}
    for doc in [*head, *(s.doc for s in file_sources), tail]:
        merged = merge(merged, doc, checker.schema, checker)
    merged = translate_deprecated(merged, checker.schema)

    user_sources = [*file_sources, flag_source]

    def origin(key: str) -> str | None:
        # The source whose value is in effect: flags win, then the last file setting it.
        for source in reversed(user_sources):
            if _has(source.doc, key):
                return source.name
        return None

    services = [(d, s.name, label) for s in file_sources for d, label in s.services]
    checks = [(c, s.name, label) for s in file_sources for c, label in s.checks]
    config = _build(merged, dev, addresses.resolve(merged, interfaces, origin))
    _check(config, services, checks)
    check_safety(merged, origin)
    if plugin_check is not None:
        _check_plugins(config.plugins, plugin_check, origin)
    unsupported, notes = scan_sources([s.doc for s in user_sources], checker.schema,
                                      checker.resolve)
    return replace(
        config,
        services=tuple(d for d, _, _ in services),
        checks=tuple(c for c, _, _ in checks),
        config_sources=tuple(str(p) for p in paths),
        unsupported=unsupported,
        warnings=(*warnings, *notes, *_address_notes(config)),
        settings={k: v for k, v in merged.items()
                  if k not in ("service", "services", "check", "checks")},
    )


def _has(doc: Mapping[str, Any], key: str) -> bool:
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _check_plugins(plugins: Mapping[str, Any], check: PluginCheck, origin) -> None:
    for name, settings in plugins.items():
        try:
            check({name: settings})
        except ValueError as exc:
            source = origin(f"plugins.{name}")
            raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None


def _address_notes(config: AgentConfig) -> list[str]:
    # Listeners serve one address each for now; say so rather than drop the others quietly.
    notes = []
    for key, many, used in (("client_addr", config.client_addrs, config.client_addr),
                            ("addresses.http", config.http_addrs, config.http_addr),
                            ("addresses.dns", config.dns_addrs, config.dns_addr)):
        if len(many) > 1:
            notes.append(f"{key} lists {len(many)} addresses; Waypost listens on the first "
                         f"one only ({used}) for now")
    return notes


def _build(c: Mapping[str, Any], dev: bool, where: Mapping[str, Any]) -> AgentConfig:
    server = c.get("server", True)  # Waypost has no client mode yet: a server unless told
    bootstrap, expect = c.get("bootstrap", False), c.get("bootstrap_expect", 0)
    if expect == 1:  # Consul: the same as bootstrap mode
        bootstrap, expect = True, 0
    limits = {**DEFAULT_LIMITS, **c.get("limits", {})}
    for key in ("https_handshake_timeout", "rpc_handshake_timeout"):
        if isinstance(limits[key], str):
            limits[key] = parse_duration(limits[key])
    enable_script_checks = c.get("enable_script_checks", False)
    return AgentConfig(
        node_name=c.get("node_name") or socket.gethostname(),
        node_id=resolve_node_id(c.get("node_id", ""), c.get("data_dir", "")),
        datacenter=c.get("datacenter", "dc1"),
        domain=c.get("domain", "consul."),
        alt_domain=c.get("alt_domain", ""),
        dev=dev,
        server=server,
        bootstrap=bootstrap,
        bootstrap_expect=expect,
        **where,
        unix_sockets=dict(c.get("unix_sockets", {})),
        ports=Ports(**{k: v for k, v in c.get("ports", {}).items() if k in _PORT_FIELDS}),
        data_dir=c.get("data_dir", ""),
        log_level=normalize_log_level(c.get("log_level", "info"), "log_level"),
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
    # A check of a service must find it: the config's services are registered first, and
    # anything else would fail at start-up, after the agent began to serve.
    service_ids = {definition.service.id for definition, _, _ in services}
    for check, source, label in checks:
        if check.service_id and check.service_id not in service_ids:
            raise ConfigError(f'{source}: {label}: ServiceID "{check.service_id}" does not '
                              "exist (no service of the config files has that ID)")


def _is_script(check) -> bool:
    # Docker checks run a command in a container: Consul counts them as script checks.
    return bool(check.args) or check.type in ("script", "docker")
