"""Builds the `AgentConfig` from config files and command-line values (flags win).

Files are JSON with Consul's keys; a directory contributes its `*.json` files in name order.
A bad file stops start-up with the file and the reason.
"""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from agent.config.model import AgentConfig, Ports


class ConfigError(Exception):
    """A config file or flag is wrong; the message names the file and the reason."""


# Consul keys we act on, and the model field each sets.
_SCALARS = {"datacenter": "datacenter", "node_name": "node_name", "node_id": "node_id",
            "data_dir": "data_dir", "server": "server", "bind_addr": "bind_addr",
            "advertise_addr": "advertise_addr", "client_addr": "client_addr",
            "log_level": "log_level", "enable_syslog": "enable_syslog", "domain": "domain",
            "node_meta": "node_meta", "plugins": "plugins"}
_PORTS = {"http", "dns", "serf_lan", "serf_wan", "server", "grpc"}


def config_files(files: Iterable[str], dirs: Iterable[str]) -> list[Path]:
    paths = [Path(f) for f in files]
    for d in dirs:
        directory = Path(d)
        if not directory.is_dir():
            raise ConfigError(f"{d}: not a directory")
        paths.extend(sorted(p for p in directory.iterdir() if p.suffix == ".json" and p.is_file()))
    return paths


def read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    return doc


def _apply(fields: dict[str, Any], doc: dict[str, Any], source: str) -> None:
    for key, value in doc.items():
        if key in _SCALARS:
            fields[_SCALARS[key]] = value
        elif key == "ports":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: ports must be an object")
            for name, port in value.items():
                if name not in _PORTS or not isinstance(port, int):
                    raise ConfigError(f"{source}: invalid ports.{name}")
                fields.setdefault("ports", {})[name] = port
        elif key == "addresses":
            if isinstance(value, dict) and isinstance(value.get("http"), str):
                fields["http_addr"] = value["http"]
        else:
            raise ConfigError(f"{source}: unknown configuration key {key!r}")


def build_config(files: Iterable[Path], flags: dict[str, Any], dev: bool) -> AgentConfig:
    fields: dict[str, Any] = {}
    for path in files:
        _apply(fields, read_file(path), str(path))
    _apply(fields, {k: v for k, v in flags.items() if v is not None}, "command line")
    ports = Ports(**{k: v for k, v in fields.pop("ports", {}).items()})
    if dev:
        fields.setdefault("server", True)
        fields.setdefault("log_level", "debug")
    fields.setdefault("node_name", socket.gethostname())
    fields.setdefault("node_id", str(uuid.uuid4()))
    try:
        config = AgentConfig(ports=ports, dev=dev, **fields)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    for name in ("datacenter", "node_name", "bind_addr", "client_addr"):
        if not isinstance(getattr(config, name), str) or not getattr(config, name):
            raise ConfigError(f"invalid {name}: must be a non-empty string")
    return replace(config, datacenter=config.datacenter.lower())
