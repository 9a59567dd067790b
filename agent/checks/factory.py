"""Which runner a check gets: `make_runner` turns a `CheckSpec` into one, with Consul's rules.

As Consul's agent does when it adds a check: an interval under one second is raised to one
second (so a typo cannot fork-bomb the host), and a check's ``OutputMaxSize`` can only lower
the 4 KiB output limit. TTL checks have no runner (the local state expires them), nor do
checks with no type.
"""

from __future__ import annotations

import random
from typing import Any

from agent.checks.alias import AliasRunner, StoreReader, Watch
from agent.checks.base import OUTPUT_MAX, CheckNotifier, IntervalRunner
from agent.checks.docker import DockerRunner
from agent.checks.grpc_check import GRPCRunner
from agent.checks.http import HTTPRunner
from agent.checks.script import ScriptRunner
from agent.checks.tcp import TCPRunner
from agent.definitions import CheckSpec

MIN_INTERVAL = 1.0  # Consul's checks.MinInterval


def make_runner(spec: CheckSpec, reactor, notifier: CheckNotifier, *,
                store_reader: StoreReader | None = None, watch: Watch | None = None,
                local_node: str = "", docker_host: str | None = None,
                rng: random.Random | None = None) -> IntervalRunner | AliasRunner | None:
    """The runner for `spec`, not yet started; None when nothing needs to run it."""
    if spec.type == "alias":
        if store_reader is None or watch is None:
            raise ValueError("alias checks need store_reader and watch")
        return AliasRunner(reactor, spec.check_id, notifier,
                           node=spec.alias_node or local_node, service_id=spec.alias_service,
                           store_reader=store_reader, watch=watch)
    if spec.type not in ("http", "tcp", "script", "docker", "grpc"):
        return None  # "ttl", "" and anything unknown
    definition = spec.definition
    output_max = OUTPUT_MAX
    if 0 < spec.output_max_size < output_max:
        output_max = spec.output_max_size
    common: dict[str, Any] = {
        "reactor": reactor, "check_id": spec.check_id,
        "interval": max(definition.interval, MIN_INTERVAL), "timeout": definition.timeout,
        "notifier": notifier, "rng": rng,
        "success_before_passing": spec.success_before_passing,
        "failures_before_critical": spec.failures_before_critical,
    }
    if spec.type == "http":
        return HTTPRunner(url=definition.http, method=definition.method,
                          header=definition.header, body=definition.body,
                          tls_skip_verify=definition.tls_skip_verify, output_max=output_max,
                          **common)
    if spec.type == "grpc":
        return GRPCRunner(target=spec.grpc, use_tls=spec.grpc_use_tls,
                          tls_skip_verify=definition.tls_skip_verify, **common)
    if spec.type == "tcp":
        return TCPRunner(address=definition.tcp, **common)
    if spec.type == "script":
        return ScriptRunner(args=spec.args, script=spec.script, output_max=output_max, **common)
    return DockerRunner(container_id=spec.docker_container_id, args=spec.args,
                        script=spec.script, shell=spec.shell, docker_host=docker_host,
                        output_max=output_max, **common)
