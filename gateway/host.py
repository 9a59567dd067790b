"""The plugin host: finds plugins through entry points, runs their hooks safely.

One `PluginHost` per agent (no module-level manager). A plugin that raises, or whose Deferred
fails, is logged with its name and the agent carries on. Catalog change notifications are
coalesced per plugin so a slow plugin sees only the latest view.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Iterable

import pluggy
import txaio
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed

from gateway import hookspecs
from gateway.views import build_catalog_view

txaio.use_twisted()


def _as_deferred(result: Any) -> Deferred:
    if inspect.iscoroutine(result):
        return ensureDeferred(result)
    if isinstance(result, Deferred):
        return result
    return succeed(result)


class PluginConfigError(ValueError):
    """A plugin's settings do not match the schema it declares."""


class PluginHost:
    log = txaio.make_logger()

    def __init__(self, reactor, allow: Iterable[str] | None = None, autoload: bool = True,
                 plugins: Iterable[tuple[str, Any]] = ()) -> None:
        self.reactor = reactor
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        if os.environ.get("WAYPOST_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(lambda msg: self.log.info("{msg}", msg=msg.rstrip()))
            self.pm.enable_tracing()
        if autoload:
            self.pm.load_setuptools_entrypoints(hookspecs.PROJECT)
            if allow is not None:
                allowed = set(allow)
                for name, plugin in list(self.pm.list_name_plugin()):
                    if name not in allowed:
                        self.pm.unregister(plugin)
        for name, plugin in plugins:
            self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self._busy: set[str] = set()
        self._pending: dict[str, Any] = {}
        self._scheduled = False

    def names(self) -> list[str]:
        return sorted(name for name, _ in self.pm.list_name_plugin())

    def _impls(self, hook: str):
        return getattr(self.pm.hook, hook).get_hookimpls()

    def _call_one(self, impl, **kwargs) -> Deferred:
        args = {k: kwargs[k] for k in impl.argnames}
        d = maybeDeferred(impl.function, **args).addCallback(_as_deferred)
        d.addErrback(self._failed, impl.plugin_name, impl.function.__name__)
        return d

    def _failed(self, failure, plugin: str, hook: str) -> None:
        self.log.failure("plugin {plugin} failed in {hook}", failure=failure, plugin=plugin, hook=hook)
        return None

    def frontends(self, facade, plugin_config: dict) -> list:
        """Collect the services every plugin contributes; a failing plugin contributes none."""
        from gateway.feed import CatalogFeed
        feed = CatalogFeed(facade, self.reactor)
        hooks = FrontendHooks(self, facade, plugin_config)
        services = []
        for _, result in self.call_each("waypost_frontends", facade, plugin_config,
                                        catalog=feed, hooks=hooks, reverse=True):
            services.extend(result or ())
        return services

    def call_each(self, hook: str, facade, plugin_config: dict, reverse: bool = False,
                  **kwargs: Any) -> list[tuple[str, Any]]:
        """Call `hook` of every plugin now, each with the arguments it declares (``facade``,
        ``reactor``, its own ``config`` and `kwargs`); (plugin name, result) of those that
        did not raise. A plugin that raises is logged with its name and skipped."""
        impls = self._impls(hook)
        done = []
        for impl in reversed(impls) if reverse else impls:
            args = {"facade": facade, "reactor": self.reactor,
                    "config": plugin_config.get(impl.plugin_name, {}), **kwargs}
            try:
                result = impl.function(**{k: args[k] for k in impl.argnames})
            except Exception:  # noqa: BLE001 - one plugin's bug must not stop the agent
                self.log.failure("plugin {plugin} failed in {hook}", plugin=impl.plugin_name,
                                 hook=hook)
                continue
            done.append((impl.plugin_name, result))
        return done

    def validate_config(self, settings: dict) -> None:
        """Check each plugin's settings against the schema it declares, before anything starts.

        Raises `PluginConfigError` naming `plugins.<name>` and the offending path.
        """
        import jsonschema
        names = set(self.names())
        for name, value in settings.items():
            if name not in names:
                raise PluginConfigError(f"plugins.{name}: no plugin of that name is loaded "
                                        f"(loaded: {', '.join(sorted(names))})")
            plugin = self.pm.get_plugin(name)
            impl = next((i for i in self._impls("waypost_config_schema") if i.plugin is plugin), None)
            schema = impl.function() if impl is not None else None
            if schema is None:
                raise PluginConfigError(f"plugins.{name}: this plugin takes no settings")
            validator = jsonschema.Draft202012Validator(schema)
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path)
                raise PluginConfigError(f"plugins.{name}{'/' + where if where else ''}: "
                                        f"{error.message}")

    def wants_catalog(self) -> bool:
        return bool(self._impls("waypost_catalog_changed") or self._impls("waypost_agent_started"))

    def agent_started(self, view) -> None:
        for impl in self._impls("waypost_agent_started"):
            self._call_one(impl, view=view)

    def agent_stopping(self) -> Deferred:
        from twisted.internet.defer import DeferredList
        return DeferredList([self._call_one(impl) for impl in self._impls("waypost_agent_stopping")])

    def catalog_changed(self, store, datacenter: str) -> None:
        """Note a change; the view is built once, on the next reactor turn, for all plugins."""
        if not self._impls("waypost_catalog_changed") or self._scheduled:
            return
        self._scheduled = True
        self.reactor.callLater(0, self._deliver, store, datacenter)

    def _deliver(self, store, datacenter: str) -> None:
        self._scheduled = False
        try:
            view = build_catalog_view(store, datacenter)
        except Exception:  # noqa: BLE001 - the next change builds a new view and delivers it
            self.log.failure("building the catalog view for plugins failed")
            return
        for impl in self._impls("waypost_catalog_changed"):
            self._offer(impl, view)

    def _offer(self, impl, view) -> None:
        name = impl.plugin_name
        if name in self._busy:
            self._pending[name] = (impl, view)
            return
        self._busy.add(name)

        def done(_):
            self._busy.discard(name)
            queued = self._pending.pop(name, None)
            if queued is not None:
                self._offer(*queued)
        self._call_one(impl, view=view, index=view.index).addBoth(done)


class FrontendHooks:
    """`hookspecs.FrontendHooks`: the hooks a frontend calls on every plugin while it builds
    itself, with the same ``facade``, ``reactor`` and per-plugin ``config`` the frontends got."""

    def __init__(self, host: PluginHost, facade, plugin_config: dict) -> None:
        self._host = host
        self._facade = facade
        self._plugin_config = plugin_config

    def http_routes(self, routes: Any) -> None:
        """Let every plugin add its routes (`waypost_http_routes`) to ``routes``."""
        self._host.call_each("waypost_http_routes", self._facade, self._plugin_config,
                             routes=routes)


class PluginServices(MultiService):
    """The frontends' services, started after the core and stopped first."""
