"""`waypost agent`: build the core, load frontends and plugins, run the reactor until a signal.

Flags are Consul's. `flag_values` turns them into a dict shaped like a config file, which
`agent.config.load.load_agent_config` merges over the files (flags win; list flags come first
in the lists, as in Consul).
"""

from __future__ import annotations

import sys
from typing import Any

from gateway.cli.flags import FlagError, FlagSet, HelpRequested


def flag_set() -> FlagSet:
    return (FlagSet("agent")
            .bool("dev",
                  help="Start a single in-memory server on 127.0.0.1 with everything enabled.")
            .bool("server", default=None, help="Run as a server.")
            .bool("bootstrap", default=None,
                  help="Bootstrap a cluster of this server alone (first start only).")
            .int("bootstrap-expect", default=None,
                 help="Servers to wait for before bootstrapping the cluster.")
            .string("node", help="Name of this node (default: the host name).")
            .string("node-id", help="A UUID for this node.")
            .string("datacenter", help="Datacenter of this agent (default dc1).")
            .string("domain", help="DNS domain (default consul.).")
            .string("alt-domain", help="A second DNS domain answered like -domain.")
            .strings("recursor", help="An upstream DNS server; repeatable.")
            .string("client", help="Address the HTTP and DNS interfaces bind to.")
            .string("bind", help="Address for cluster communication.")
            .string("advertise", help="Address to advertise to other nodes.")
            .string("advertise-wan",
                    help="Address to advertise to other datacenters. Not supported yet.")
            .int("http-port", default=None, help="HTTP API port (default 8500).")
            .int("dns-port", default=None, help="DNS port (default 8600).")
            .int("server-port", default=None, help="Server RPC port (default 8300).")
            .int("serf-lan-port", default=None, help="Serf LAN port (default 8301).")
            .int("serf-wan-port", default=None, help="Serf WAN port (default 8302).")
            .int("grpc-port", default=None, help="gRPC port (-1 disables). Not supported yet.")
            .strings("join", help="An agent (Serf LAN address) to join at start; repeatable.")
            .strings("retry-join", help="An agent to join at start, retried until one answers; "
                     "repeatable.")
            .strings("join-wan", help="A server of another datacenter to join; repeatable. "
                     "Refused: the WAN pool is not supported yet.")
            .strings("retry-join-wan", help="A server of another datacenter to join, retried; "
                     "repeatable. Refused: the WAN pool is not supported yet.")
            .string("retry-interval", help="Time between join attempts (default 30s).")
            .int("retry-max", default=None, help="Join attempts before giving up (0: no limit).")
            .bool("rejoin", default=None, help="Rejoin after leaving. Not supported yet.")
            .string("encrypt", help="Base64 gossip encryption key (16, 24 or 32 bytes).")
            .strings("node-meta", help="key:value metadata of this node; repeatable.")
            .string("data-dir", help="Directory for state.")
            .strings("config-dir", help="A directory of *.json and *.hcl config files, read in "
                     "name order; repeatable.")
            .strings("config-file", help="A JSON or HCL (.hcl) config file; repeatable.")
            .string("config-format", help="json or hcl: how to read config files named "
                    "neither .json nor .hcl (default json).")
            .string("log-level", help="trace, debug, info, warn or error (default info).")
            .string("log-file", help="Also write the log to this file. Not supported yet.")
            .bool("log-json", default=None, help="Log as JSON. Not supported yet.")
            .bool("syslog", default=None, help="Also log to syslog.")
            .string("pid-file", help="Write the agent's process id to this file.")
            .bool("enable-script-checks", default=None,
                  help="Allow script checks, registered by config files or the HTTP API.")
            .bool("enable-local-script-checks", default=None,
                  help="Allow script checks from config files only.")
            .bool("ui", default=None, help="Serve the web UI. Not supported yet.")
            .string("ui-dir", help="Serve the web UI from this directory. Not supported yet.")
            .string("ui-content-path", help="URL path of the web UI. Not supported yet."))


def flag_values(v) -> dict[str, Any]:
    """The flags given, as config-file keys (``None``/empty: not given)."""
    ports = {k: getattr(v, f"{k}_port")
             for k in ("http", "dns", "server", "serf_lan", "serf_wan", "grpc")}
    out: dict[str, Any] = {
        "node_name": v.node, "node_id": v.node_id, "datacenter": v.datacenter,
        "domain": v.domain, "alt_domain": v.alt_domain, "client_addr": v.client,
        "bind_addr": v.bind, "advertise_addr": v.advertise, "data_dir": v.data_dir,
        "log_level": v.log_level, "enable_syslog": v.syslog, "server": v.server,
        "bootstrap": v.bootstrap, "bootstrap_expect": v.bootstrap_expect,
        "recursors": v.recursor, "start_join": v.join, "retry_join": v.retry_join,
        "start_join_wan": v.join_wan, "retry_join_wan": v.retry_join_wan,
        "retry_interval": v.retry_interval, "retry_max": v.retry_max,
        "rejoin_after_leave": v.rejoin, "advertise_addr_wan": v.advertise_wan,
        "encrypt": v.encrypt, "pid_file": v.pid_file, "ui": v.ui, "ui_dir": v.ui_dir,
        "ui_content_path": v.ui_content_path, "log_file": v.log_file, "log_json": v.log_json,
        "enable_script_checks": v.enable_script_checks,
        "enable_local_script_checks": v.enable_local_script_checks,
    }
    given_ports = {k: p for k, p in ports.items() if p is not None}
    if given_ports:
        out["ports"] = given_ports
    if v.node_meta:
        out["node_meta"] = node_meta(v.node_meta)
    return out


def node_meta(pairs: list[str]) -> dict[str, str]:
    """``-node-meta key:value`` flags as a map (the value may hold more colons)."""
    meta = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep:
            raise FlagError(f"-node-meta: {pair!r} is not key:value")
        meta[key] = value
    return meta


def plugin_checker():
    """Checks one plugin's settings as the agent's plugin host will, so that a config file's
    mistake under ``plugins`` is reported with the file's name before anything starts."""
    from gateway.host import PluginHost

    host = PluginHost(reactor=None)  # only loads the entry points; nothing runs
    return host.validate_config


def main(argv: list[str]) -> int:
    fs = flag_set()
    try:
        values, rest = fs.parse(argv)
    except HelpRequested:
        print("Usage: waypost agent [options]\n\n" + fs.help_text())
        return 0
    except FlagError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if rest:
        print(f"Error: unexpected arguments: {' '.join(rest)}", file=sys.stderr)
        return 1
    if values.config_format not in (None, "json", "hcl"):
        print(f"Error: -config-format must be json or hcl, not {values.config_format!r}",
              file=sys.stderr)
        return 1
    from agent.config.load import ConfigError, load_agent_config
    files, dirs = list(values.config_file), list(values.config_dir)
    try:
        flags = flag_values(values)
    except FlagError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    check_plugin = plugin_checker()

    def load(flags):
        return load_agent_config(files, dirs, flags, dev=values.dev, plugin_check=check_plugin,
                                 config_format=values.config_format)
    try:
        config = load(flags)
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    # Logging starts inside run_agent; these come first, one line each, like Consul's.
    for warning in config.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    from gateway.runner import run_agent

    # A reload (SIGHUP, `waypost reload`) re-reads every file and directory. The node's name
    # and ID cannot change while it runs (as in Consul), so a random ID stays the same.
    pinned = {**flags, "node_name": config.node_name, "node_id": config.node_id}
    return run_agent(config, reload_config=lambda: load(pinned))
