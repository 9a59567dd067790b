"""Dependencies point down: plugins -> gateway.hookspecs, gateway -> the core's facade, never up."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What frontends may import from the core (the facade re-exports the rest).
GATEWAY_MAY_USE = {"agent.facade", "agent.structs", "agent.errors", "agent.agent",
                   "agent.config.load", "agent.config.model",
                   # Go durations, pure and Twisted-free: the CLI must not import the core.
                   "agent.durations",
                   # Consul's snapshot file format, pure too: the CLI checks files with it.
                   "agent.snapshot_archive"}
PLUGINS_MAY_USE = {"gateway.hookspecs"}


def imports(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "agent":
                for alias in node.names:
                    yield f"agent.{alias.name}"
            else:
                yield node.module


def modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".")[0]


def test_core_imports_no_frontend_or_plugin():
    bad = [(str(p.relative_to(ROOT)), m) for p in modules("agent") for m in imports(p)
           if top(m) in ("gateway", "plugins")]
    assert bad == []


def test_gateway_reaches_the_core_only_through_its_door():
    bad = []
    for path in modules("gateway"):
        for name in imports(path):
            if top(name) == "plugins":
                bad.append((str(path.relative_to(ROOT)), name))
            elif top(name) == "agent" and name not in GATEWAY_MAY_USE:
                bad.append((str(path.relative_to(ROOT)), name))
    assert bad == []


def test_plugins_see_only_the_hook_api():
    bad = []
    for path in modules("plugins"):
        for name in imports(path):
            if top(name) == "agent" or (top(name) == "gateway" and name not in PLUGINS_MAY_USE):
                bad.append((str(path.relative_to(ROOT)), name))
    assert bad == []


def test_core_never_uses_the_global_reactor_or_wall_clock():
    bad = []
    for path in modules("agent"):
        text = path.read_text()
        if "from twisted.internet import reactor" in text or "time.time()" in text:
            bad.append(str(path.relative_to(ROOT)))
    assert bad == []


def test_frontends_never_reach_into_the_core_past_its_seams():
    """The facade offers read/write/on_change and agent facts; its internals (the store, the
    local state, the session manager) are neither exposed nor reached for."""
    from agent.facade import AgentFacade
    forbidden = ("facade.store", "facade.local.", "facade.sessions", ".store.kv",
                 ".store.catalog", "store.on_commit")
    bad = []
    for package in ("gateway", "plugins"):
        for path in modules(package):
            text = path.read_text()
            bad += [(str(path.relative_to(ROOT)), word) for word in forbidden if word in text]
    assert bad == []
    assert not {"store", "local", "sessions"} & set(vars(AgentFacade))
    import inspect
    assert "store" not in inspect.signature(AgentFacade).parameters
