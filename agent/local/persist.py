"""This agent's API registrations on disk, so that they survive a restart (and a crash).

The layout is Consul's data_dir layout: ``services/<md5 of the service ID>`` and
``checks/<md5 of the check ID>`` for each service and check registered through the API (each a
JSON document of the definition plus its token), and ``checks/state/<md5 of the check ID>``
for the last status a TTL check was given, valid until its TTL runs out. Config-file
registrations are not kept here: they come back from the config.

Every file is written to a temporary name, fsynced, renamed over the old one and the directory
fsynced, so after a crash each file is the old or the new version, never half of one, and a
registration that was acknowledged is on disk. Files hold tokens, so they are private (0600).

Loading never fails as a whole: a damaged file is logged, naming the file, and skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import txaio

from agent import structs
from agent.definitions import CheckSpec
from agent.state import codec
from agent.structs import Service

txaio.use_twisted()

FORMAT_VERSION = 1
SERVICES_DIR = "services"
CHECKS_DIR = "checks"
STATE_DIR = "state"  # under CHECKS_DIR, as in Consul
TMP_SUFFIX = ".tmp"
_STATUSES = (structs.PASSING, structs.WARNING, structs.CRITICAL)


class DamagedFile(ValueError):
    """A persisted file that cannot be read back; the message says what is wrong."""


@dataclass(frozen=True)
class CheckState:
    """The last status given to a TTL check and when it lapses (seconds since the epoch)."""

    check_id: str
    status: str
    output: str
    expires: float


@dataclass
class Saved:
    """Everything read back from a data_dir, damaged files left out."""

    services: list[tuple[Service, str]] = field(default_factory=list)  # (service, token)
    checks: list[CheckSpec] = field(default_factory=list)
    states: dict[str, CheckState] = field(default_factory=dict)


def file_name(item_id: str) -> str:
    """Consul's name for an ID's file: the hex MD5 of the ID (not a security measure)."""
    return hashlib.md5(item_id.encode("utf-8"), usedforsecurity=False).hexdigest()


# -- codecs ---------------------------------------------------------------------------------

_SPEC_FIELDS = tuple(f for f in fields(CheckSpec) if f.name not in ("definition", "token"))


def encode_check_spec(spec: CheckSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in _SPEC_FIELDS:
        value = getattr(spec, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    out["definition"] = codec.encode_definition(spec.definition)
    return out


def decode_check_spec(data: Any, token: str) -> CheckSpec:
    """A `CheckSpec` from `encode_check_spec` output; every field's type is checked."""
    if not isinstance(data, dict):
        raise DamagedFile("the check is not a JSON object")
    values: dict[str, Any] = {}
    for f in _SPEC_FIELDS:
        if f.name not in data:
            continue  # written by an older version: the default holds
        default = CheckSpec.__dataclass_fields__[f.name].default
        values[f.name] = _typed(f.name, data[f.name], default)
    if not values.get("check_id"):
        raise DamagedFile("the check has no check_id")
    definition = data.get("definition")
    if definition is not None and not isinstance(definition, dict):
        raise DamagedFile("field definition is not a JSON object")
    try:
        values["definition"] = codec.decode_definition(definition)
    except (TypeError, ValueError, AttributeError) as exc:
        raise DamagedFile(f"field definition: {exc}") from None
    return CheckSpec(token=token, **values)


def _typed(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise DamagedFile(f"field {name} has the wrong type")
    return value


def _decode_service(data: Any) -> Service:
    if not isinstance(data, dict):
        raise DamagedFile("the service is not a JSON object")
    try:
        service = codec.decode_service(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DamagedFile(f"the service does not decode: {exc!r}") from None
    if not isinstance(service.id, str) or not service.id or not isinstance(service.name, str):
        raise DamagedFile("the service has no id or name")
    return service


# -- files ----------------------------------------------------------------------------------


def write_atomic(path: Path, document: Any) -> None:
    """Replace `path` with `document` as JSON, so that a crash leaves the old or new file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    data = json.dumps(document, separators=(",", ":")).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


class LocalPersistence:
    """Reads and writes the persisted registrations under one data_dir.

    Writes raise `OSError` when the disk refuses them; the caller decides what that means for
    the request (nothing is half-applied: a registration is kept only once it is on disk).
    """

    log = txaio.make_logger()

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.root = Path(data_dir)
        self.services_dir = self.root / SERVICES_DIR
        self.checks_dir = self.root / CHECKS_DIR
        self.state_dir = self.checks_dir / STATE_DIR

    # --- writes ---

    def save_service(self, service: Service, token: str) -> None:
        doc = {"version": FORMAT_VERSION, "token": token,
               "service": codec.encode_service(_unindexed(service))}
        write_atomic(self.services_dir / file_name(service.id), doc)

    def remove_service(self, service_id: str) -> None:
        _remove(self.services_dir / file_name(service_id))

    def save_check(self, spec: CheckSpec) -> None:
        doc = {"version": FORMAT_VERSION, "token": spec.token, "check": encode_check_spec(spec)}
        write_atomic(self.checks_dir / file_name(spec.check_id), doc)

    def remove_check(self, check_id: str, with_state: bool = True) -> None:
        _remove(self.checks_dir / file_name(check_id))
        if with_state:
            self.remove_check_state(check_id)

    def save_check_state(self, state: CheckState) -> None:
        doc = {"version": FORMAT_VERSION, "check_id": state.check_id, "status": state.status,
               "output": state.output, "expires": state.expires}
        write_atomic(self.state_dir / file_name(state.check_id), doc)

    def remove_check_state(self, check_id: str) -> None:
        _remove(self.state_dir / file_name(check_id))

    # --- reading back ---

    def load(self) -> Saved:
        saved = Saved()
        for path, doc in self._documents(self.services_dir, "service"):
            try:
                saved.services.append((_decode_service(doc.get("service")), _token(doc)))
            except DamagedFile as exc:
                self._damaged(path, "service", exc)
        for path, doc in self._documents(self.checks_dir, "check"):
            try:
                saved.checks.append(decode_check_spec(doc.get("check"), _token(doc)))
            except DamagedFile as exc:
                self._damaged(path, "check", exc)
        for path, doc in self._documents(self.state_dir, "check state"):
            try:
                state = _decode_state(doc)
            except DamagedFile as exc:
                self._damaged(path, "check state", exc)
                continue
            saved.states[state.check_id] = state
        return saved

    def _documents(self, directory: Path, what: str):
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.log.error("Failed reading the {what} directory {dir}: {error}", what=what,
                           dir=str(directory), error=exc)
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.name.endswith(TMP_SUFFIX):
                # A write that a crash interrupted; the file it was replacing is intact.
                _discard(path)
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    doc = json.load(f)
            except (OSError, ValueError) as exc:
                self._damaged(path, what, exc)
                continue
            if not isinstance(doc, dict):
                self._damaged(path, what, DamagedFile("not a JSON object"))
                continue
            if doc.get("version") != FORMAT_VERSION:
                self._damaged(path, what,
                              DamagedFile(f"unsupported format version {doc.get('version')!r}"))
                continue
            yield path, doc

    def _damaged(self, path: Path, what: str, exc: Exception) -> None:
        self.log.error("Failed decoding {what} file {file}, skipped: {error}", what=what,
                       file=str(path), error=exc)


def _token(doc: dict) -> str:
    token = doc.get("token", "")
    if not isinstance(token, str):
        raise DamagedFile("field token is not a string")
    return token


def _decode_state(doc: dict) -> CheckState:
    check_id, status, output = doc.get("check_id"), doc.get("status"), doc.get("output", "")
    expires = doc.get("expires")
    if not isinstance(check_id, str) or not check_id:
        raise DamagedFile("the check state has no check_id")
    if status not in _STATUSES or not isinstance(output, str):
        raise DamagedFile("the check state has a bad status or output")
    if not isinstance(expires, (int, float)) or isinstance(expires, bool):
        raise DamagedFile("the check state has no expiry")
    return CheckState(check_id=check_id, status=status, output=output, expires=float(expires))


def _unindexed(service: Service) -> Service:
    return replace(service, create_index=0, modify_index=0)


def _discard(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
