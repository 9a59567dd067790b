"""/v1/status/leader and /v1/status/peers."""

from __future__ import annotations


def leader(facade, request, params, arg):
    return facade.leader()


def peers(facade, request, params, arg):
    return facade.peers()
