"""The typed writes of this agent's own services and checks (/v1/agent/*).

Frontends hand these to `facade.write(command, WriteRequest)`; `agent.local.endpoints` applies
them to the local state, which syncs the catalog. They are never log commands: a client agent
takes them the same way, without a store. Each answers a `WriteResult` whose index is the one
the sync carrying the change was applied at (0 when it was not written yet: it is retried).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.definitions import CheckSpec, ServiceDefinition


@dataclass(frozen=True, slots=True)
class RegisterService:
    """Register (or replace) a service and its checks (Consul's /v1/agent/service/register)."""

    ENDPOINT = "Agent.ServiceRegister"
    definition: ServiceDefinition
    replace_existing_checks: bool = False


@dataclass(frozen=True, slots=True)
class DeregisterService:
    """Remove a service and its checks; an unknown ID is not an error, as in Consul."""

    ENDPOINT = "Agent.ServiceDeregister"
    service_id: str


@dataclass(frozen=True, slots=True)
class RegisterCheck:
    ENDPOINT = "Agent.CheckRegister"
    spec: CheckSpec


@dataclass(frozen=True, slots=True)
class DeregisterCheck:
    ENDPOINT = "Agent.CheckDeregister"
    check_id: str


@dataclass(frozen=True, slots=True)
class UpdateTTL:
    """Give a TTL check a status and output, and restart its TTL (pass/warn/fail/update)."""

    ENDPOINT = "Agent.UpdateTTL"
    check_id: str
    status: str
    output: str = ""


@dataclass(frozen=True, slots=True)
class NodeMaintenance:
    ENDPOINT = "Agent.NodeMaintenance"
    enable: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ServiceMaintenance:
    ENDPOINT = "Agent.ServiceMaintenance"
    service_id: str
    enable: bool
    reason: str = ""


LOCAL_COMMANDS = (RegisterService, DeregisterService, RegisterCheck, DeregisterCheck, UpdateTTL,
                  NodeMaintenance, ServiceMaintenance)
