"""The node's ID when no `node_id` is configured: kept in `data_dir/node-id`, as Consul does.

A node whose ID changed at every restart would look like a new node to the catalog while its
persisted registrations (agent.local.persist) still name the old one. Consul reads the file,
or writes a fresh random UUID there; without a data dir the ID is random for this run.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from agent.config.validate import ConfigError

FILE_NAME = "node-id"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def resolve_node_id(configured: str, data_dir: str) -> str:
    """`configured` if set; else the ID kept in `data_dir` (created on first use)."""
    if configured:
        return configured
    if not data_dir:
        return str(uuid.uuid4())
    path = Path(data_dir) / FILE_NAME
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return _create(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the node ID: {exc}") from None
    if not _UUID.match(text):
        raise ConfigError(f"{path}: the node ID {text!r} is not a UUID; fix or delete the file")
    return text.lower()


def _create(path: Path) -> str:
    node_id = str(uuid.uuid4())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(FILE_NAME + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(node_id)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot save the node ID: {exc.strerror or exc}") from None
    return node_id
