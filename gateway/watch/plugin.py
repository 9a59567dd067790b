"""The configured watches as a frontend plugin, loaded through the `waypost` entry points."""

from __future__ import annotations

from gateway.hookspecs import hookimpl
from gateway.watch.runner import make_watches_service


@hookimpl
def waypost_frontends(facade, reactor):
    return [make_watches_service(facade, reactor)]
