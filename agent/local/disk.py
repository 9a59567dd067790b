"""What the local state writes to data_dir for each change, and what a refusal means.

Owns the policy over `agent.local.persist`: an API registration is on disk before it is
applied, and a write the disk refuses fails the request whole with a clear message (nothing is
half-applied); a config registration is never kept on disk (the config brings it back), and
removing files that should no longer exist is best effort (a failure is logged).
"""

from __future__ import annotations

from typing import Any, Callable

import txaio

from agent.definitions import CheckSpec, ServiceDefinition
from agent.errors import WaypostError
from agent.local.entries import API
from agent.local.persist import CheckState, LocalPersistence

txaio.use_twisted()


class LocalDisk:
    """The registrations' files, or nothing at all when `persistence` is None."""

    log = txaio.make_logger()

    def __init__(self, persistence: LocalPersistence | None) -> None:
        self.persistence = persistence

    def save_service(self, definition: ServiceDefinition, source: str, new: bool) -> None:
        """Keep an API service and its checks; a config one drops any stale API copy.
        `new`: the service is not registered yet, so a refusal leaves no part of it behind."""
        if self.persistence is None:
            return
        service = definition.service
        if source != API:
            # The config owns it now; a stale API copy must not come back at restart.
            # (A TTL check's saved state stays: it belongs to the check, whoever defines it.)
            self.forget(lambda p: [p.remove_service(service.id)] + [
                p.remove_check(s.check_id, with_state=False) for s in definition.checks])
            return
        written: list[Callable[[LocalPersistence], None]] = []

        def save(p: LocalPersistence) -> None:
            p.save_service(service, definition.token)
            written.append(lambda q: q.remove_service(service.id))
            for spec in definition.checks:
                p.save_check(spec)
                written.append(lambda q, cid=spec.check_id: q.remove_check(cid))
        try:
            self.write(f'registering service "{service.id}"', save)
        except WaypostError:
            if new:
                for undo in written:
                    self.forget(undo)
            raise

    def save_check(self, spec: CheckSpec, source: str) -> None:
        if self.persistence is None:
            return
        if source == API:
            self.write(f'registering check "{spec.check_id}"', lambda p: p.save_check(spec))
        else:
            self.forget(lambda p: p.remove_check(spec.check_id, with_state=False))

    def remove_service(self, service_id: str, check_ids: list[str]) -> None:
        """Off the disk first: a deregistration the disk refuses would come back at restart."""
        def forget(p: LocalPersistence) -> None:
            for check_id in check_ids:
                p.remove_check(check_id)
            p.remove_service(service_id)
        self.write(f'deregistering service "{service_id}"', forget)

    def remove_check(self, check_id: str) -> None:
        self.write(f'deregistering check "{check_id}"', lambda p: p.remove_check(check_id))

    def save_ttl_state(self, state: CheckState) -> None:
        self.write(f'updating check "{state.check_id}"', lambda p: p.save_check_state(state))

    def write(self, what: str, action: Callable[[LocalPersistence], Any]) -> None:
        """Run a persistence write; a refusal fails the request with a clear message."""
        if self.persistence is None:
            return
        try:
            action(self.persistence)
        except OSError as exc:
            self.log.error("Failed {what}: could not write to data_dir: {error}", what=what,
                           error=exc)
            raise WaypostError(f"Failed {what}: could not persist it in data_dir: "
                               f"{exc.strerror or exc}") from None

    def forget(self, action: Callable[[LocalPersistence], Any]) -> None:
        """A best-effort removal of files that should no longer exist; failures are logged."""
        if self.persistence is None:
            return
        try:
            action(self.persistence)
        except OSError as exc:
            self.log.error("Failed removing a persisted registration from data_dir: {error}",
                           error=exc)
