"""Taking back, at start, the API registrations a previous run kept in data_dir.

Owns Consul's rules for it: a service or check the config defines wins (and its persisted file
is removed), a check whose service is gone is dropped, a restored check starts critical unless
it is a TTL check whose saved state has not lapsed (`LocalState` applies that part), and
anything that cannot be restored is logged and skipped — the agent starts regardless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import txaio
from twisted.internet.defer import Deferred

from agent.definitions import CheckSpec, ServiceDefinition
from agent.errors import WaypostError
from agent.local.entries import API
from agent.local.persist import Saved

if TYPE_CHECKING:
    from agent.local.state import LocalState

txaio.use_twisted()

log = txaio.make_logger()


def restore_saved(local: "LocalState", saved: Saved) -> None:
    """Register what `saved` holds at `local`; call after the config's registrations."""
    forget = local.disk.forget
    services = {service.id for service, _ in saved.services}
    by_service: dict[str, list[CheckSpec]] = {}
    standalone = []
    for spec in saved.checks:
        if spec.check_id in local.checks:
            log.debug("check {cid} is defined in the config; not restoring it from file",
                      cid=spec.check_id)
            forget(lambda p, cid=spec.check_id: p.remove_check(cid, False))
        elif spec.service_id and spec.service_id in services:
            by_service.setdefault(spec.service_id, []).append(spec)
        else:
            standalone.append(spec)
    for service, token in saved.services:
        if service.id in local.services:
            log.debug("service {sid} is defined in the config; not restoring it from file",
                      sid=service.id)
            forget(lambda p, sid=service.id: p.remove_service(sid))
            standalone.extend(by_service.pop(service.id, ()))
            continue
        definition = ServiceDefinition(service=service, token=token,
                                       checks=tuple(by_service.pop(service.id, ())))
        _restore_one(local, f'service "{service.id}"', lambda d=definition: local.add_service(
            d, API, False, persist=False, restoring=True))
    for spec in standalone:
        if spec.service_id and spec.service_id not in local.services:
            log.warn('Not restoring check "{cid}": its service "{sid}" is gone',
                     cid=spec.check_id, sid=spec.service_id)
            forget(lambda p, cid=spec.check_id: p.remove_check(cid))
            continue
        _restore_one(local, f'check "{spec.check_id}"', lambda s=spec: local.add_check(
            s, API, persist=False, restoring=True))
    for check_id in local.take_saved_states():
        if check_id not in local.checks:
            forget(lambda p, cid=check_id: p.remove_check_state(cid))


def _restore_one(local: "LocalState", what: str, add: Callable[[], Deferred]) -> None:
    try:
        local.background(add())
    except WaypostError as exc:
        log.error("Failed restoring {what} from data_dir: {error}", what=what, error=exc)
