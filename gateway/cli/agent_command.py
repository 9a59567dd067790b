"""`waypost agent`: build the core, load frontends and plugins, run the reactor until a signal."""

from __future__ import annotations

import sys

from gateway.cli.flags import FlagError, FlagSet, HelpRequested

LOG_LEVELS = ("trace", "debug", "info", "warn", "error")


def flag_set() -> FlagSet:
    return (FlagSet("agent")
            .bool("dev", help="Start a single in-memory server on 127.0.0.1 with everything enabled.")
            .bool("server", default=None, help="Run as a server.")
            .int("bootstrap-expect", default=None, help="Accepted for compatibility; clustering comes with Raft.")
            .string("node", help="Name of this node (default: the host name).")
            .string("node-id", help="A UUID for this node.")
            .string("datacenter", help="Datacenter of this agent (default dc1).")
            .string("domain", help="DNS domain (default consul.).")
            .string("client", help="Address the HTTP and DNS interfaces bind to.")
            .string("bind", help="Address for cluster communication.")
            .string("advertise", help="Address to advertise to other nodes.")
            .int("http-port", default=None, help="HTTP API port (default 8500).")
            .int("dns-port", default=None, help="DNS port (default 8600).")
            .int("server-port", default=None, help="Server RPC port (default 8300).")
            .int("serf-lan-port", default=None, help="Serf LAN port (default 8301).")
            .int("serf-wan-port", default=None, help="Serf WAN port (default 8302).")
            .string("data-dir", help="Directory for state.")
            .strings("config-dir", help="A directory of *.json config files; repeatable.")
            .strings("config-file", help="A JSON config file; repeatable.")
            .string("log-level", help="trace, debug, info, warn or error (default info).")
            .bool("syslog", default=None, help="Also log to syslog.")
            .bool("ui", default=None, help="Accepted for compatibility."))


def _flag_values(v) -> dict:
    ports = {k: getattr(v, f"{k}_port") for k in ("http", "dns", "server", "serf_lan", "serf_wan")}
    out = {"node_name": v.node, "node_id": v.node_id, "datacenter": v.datacenter,
           "domain": v.domain, "client_addr": v.client, "bind_addr": v.bind,
           "advertise_addr": v.advertise, "data_dir": v.data_dir, "log_level": v.log_level,
           "enable_syslog": v.syslog, "server": v.server}
    given_ports = {k: p for k, p in ports.items() if p is not None}
    if given_ports:
        out["ports"] = given_ports
    return out


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
    from agent.config.load import ConfigError, build_config, config_files
    try:
        files = config_files(values.config_file, values.config_dir)
        config = build_config(files, _flag_values(values), dev=values.dev)
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if config.log_level.lower() not in LOG_LEVELS:
        print(f"Error: invalid log level {config.log_level!r}", file=sys.stderr)
        return 1
    from gateway.runner import run_agent
    return run_agent(config)
