"""Consul's DebugConfig for /v1/agent/self: the agent's runtime configuration, sanitized.

Owns the mapping from `AgentConfig` (its fields, and `AgentConfig.settings` for every other
key a user set) to Consul 1.8.7's DebugConfig field names and formats: every key is always
present and sorted; durations as Go prints them; secrets as "hidden". Clients (Nomad's
fingerprinter, `consul info`, harnesses) read keys out of it. A setting nobody gave shows
Consul's default for a non-dev server (or for -dev).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from agent.facade import parse_duration
from gateway.http.debug_defaults import DEBUG_CONFIG, DEV_DEBUG_CONFIG
from gateway.http.encode import go_duration, go_map

# Consul's log level names (hclog) for ours, when the level was not spelled by the user.
_LOG_LEVELS = {"trace": "TRACE", "debug": "DEBUG", "info": "INFO", "warn": "WARN",
               "error": "ERR"}
_RAFT_BASE = {"ConsulRaftElectionTimeout": 1.0, "ConsulRaftHeartbeatTimeout": 1.0,
              "ConsulRaftLeaderLeaseTimeout": 0.5}  # seconds, times performance.raft_multiplier


def _dur(value: Any) -> str:
    return go_duration(parse_duration(value))


def _same(value: Any) -> Any:
    return value


# (setting, DebugConfig key, conversion) for settings shown as they are (or as a duration).
_PLAIN: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("acl.default_policy", "ACLDefaultPolicy", _same),
    ("acl.down_policy", "ACLDownPolicy", _same),
    ("acl.enable_key_list_policy", "ACLEnableKeyListPolicy", _same),
    ("acl.enable_token_persistence", "ACLEnableTokenPersistence", _same),
    ("acl.enable_token_replication", "ACLTokenReplication", _same),
    ("acl.policy_ttl", "ACLPolicyTTL", _dur),
    ("acl.role_ttl", "ACLRoleTTL", _dur),
    ("acl.token_ttl", "ACLTokenTTL", _dur),
    ("acl.disabled_ttl", "ACLDisabledTTL", _dur),
    ("ae_interval", "AEInterval", _dur),
    ("http_config.allow_write_http_from", "AllowWriteHTTPFrom", list),
    ("autopilot.cleanup_dead_servers", "AutopilotCleanupDeadServers", _same),
    ("autopilot.disable_upgrade_migration", "AutopilotDisableUpgradeMigration", _same),
    ("autopilot.last_contact_threshold", "AutopilotLastContactThreshold", _dur),
    ("autopilot.max_trailing_logs", "AutopilotMaxTrailingLogs", _same),
    ("autopilot.min_quorum", "AutopilotMinQuorum", _same),
    ("autopilot.redundancy_zone_tag", "AutopilotRedundancyZoneTag", _same),
    ("autopilot.server_stabilization_time", "AutopilotServerStabilizationTime", _dur),
    ("autopilot.upgrade_version_tag", "AutopilotUpgradeVersionTag", _same),
    ("auto_encrypt.allow_tls", "AutoEncryptAllowTLS", _same),
    ("auto_encrypt.dns_san", "AutoEncryptDNSSAN", list),
    ("auto_encrypt.ip_san", "AutoEncryptIPSAN", list),
    ("auto_encrypt.tls", "AutoEncryptTLS", _same),
    ("ca_file", "CAFile", _same),
    ("ca_path", "CAPath", _same),
    ("cert_file", "CertFile", _same),
    ("check_deregister_interval_min", "CheckDeregisterIntervalMin", _dur),
    ("check_output_max_size", "CheckOutputMaxSize", _same),
    ("check_reap_interval", "CheckReapInterval", _dur),
    ("check_update_interval", "CheckUpdateInterval", _dur),
    ("connect.ca_provider", "ConnectCAProvider", _same),
    ("connect.enabled", "ConnectEnabled", _same),
    ("connect.enable_mesh_gateway_wan_federation", "ConnectMeshGatewayWANFederationEnabled",
     _same),
    ("connect.test_ca_leaf_root_change_spread", "ConnectTestCALeafRootChangeSpread", _dur),
    ("ports.sidecar_max_port", "ConnectSidecarMaxPort", _same),
    ("ports.sidecar_min_port", "ConnectSidecarMinPort", _same),
    ("consul.coordinate.update_batch_size", "ConsulCoordinateUpdateBatchSize", _same),
    ("consul.coordinate.update_max_batches", "ConsulCoordinateUpdateMaxBatches", _same),
    ("consul.coordinate.update_period", "ConsulCoordinateUpdatePeriod", _dur),
    ("consul.server.health_interval", "ConsulServerHealthInterval", _dur),
    ("default_query_time", "DefaultQueryTime", _dur),
    ("disable_anonymous_signature", "DisableAnonymousSignature", _same),
    ("disable_coordinates", "DisableCoordinates", _same),
    ("disable_http_unprintable_char_filter", "DisableHTTPUnprintableCharFilter", _same),
    ("disable_host_node_id", "DisableHostNodeID", _same),
    ("disable_keyring_file", "DisableKeyringFile", _same),
    ("disable_remote_exec", "DisableRemoteExec", _same),
    ("disable_update_check", "DisableUpdateCheck", _same),
    ("discard_check_output", "DiscardCheckOutput", _same),
    ("discovery_max_stale", "DiscoveryMaxStale", _dur),
    ("enable_agent_tls_for_checks", "EnableAgentTLSForChecks", _same),
    ("enable_central_service_config", "EnableCentralServiceConfig", _same),
    ("enable_debug", "EnableDebug", _same),
    ("encrypt_verify_incoming", "EncryptVerifyIncoming", _same),
    ("encrypt_verify_outgoing", "EncryptVerifyOutgoing", _same),
    ("ports.expose_max_port", "ExposeMaxPort", _same),
    ("ports.expose_min_port", "ExposeMinPort", _same),
    ("http_config.block_endpoints", "HTTPBlockEndpoints", list),
    ("http_config.response_headers", "HTTPResponseHeaders", go_map),
    ("http_config.use_cache", "HTTPUseCache", _same),
    ("limits.http_max_conns_per_client", "HTTPMaxConnsPerClient", _same),
    ("limits.https_handshake_timeout", "HTTPSHandshakeTimeout", _dur),
    ("limits.rpc_handshake_timeout", "RPCHandshakeTimeout", _dur),
    ("limits.rpc_max_burst", "RPCMaxBurst", _same),
    ("limits.rpc_max_conns_per_client", "RPCMaxConnsPerClient", _same),
    ("limits.rpc_rate", "RPCRateLimit", _same),
    ("limits.txn_max_req_len", "TxnMaxReqLen", _same),
    ("max_query_time", "MaxQueryTime", _dur),
    ("non_voting_server", "NonVotingServer", _same),
    ("performance.leave_drain_time", "LeaveDrainTime", _dur),
    ("performance.rpc_hold_timeout", "RPCHoldTimeout", _dur),
    ("primary_gateways", "PrimaryGateways", list),
    ("primary_gateways_interval", "PrimaryGatewaysInterval", _dur),
    ("protocol", "RPCProtocol", _same),
    ("raft_protocol", "RaftProtocol", _same),
    ("raft_snapshot_interval", "RaftSnapshotInterval", _dur),
    ("raft_snapshot_threshold", "RaftSnapshotThreshold", _same),
    ("raft_trailing_logs", "RaftTrailingLogs", _same),
    ("reconnect_timeout", "ReconnectTimeoutLAN", _dur),
    ("reconnect_timeout_wan", "ReconnectTimeoutWAN", _dur),
    ("rejoin_after_leave", "RejoinAfterLeave", _same),
    ("retry_interval", "RetryJoinIntervalLAN", _dur),
    ("retry_interval_wan", "RetryJoinIntervalWAN", _dur),
    ("retry_max", "RetryJoinMaxAttemptsLAN", _same),
    ("retry_max_wan", "RetryJoinMaxAttemptsWAN", _same),
    ("revision", "Revision", _same),
    ("segment_limit", "SegmentLimit", _same),
    ("segment_name_limit", "SegmentNameLimit", _same),
    ("serf_lan_allowed_cidrs", "SerfAllowedCIDRsLAN", list),
    ("serf_wan_allowed_cidrs", "SerfAllowedCIDRsWAN", list),
    ("server_name", "ServerName", _same),
    ("session_ttl_min", "SessionTTLMin", _dur),
    ("sync_coordinate_interval_min", "SyncCoordinateIntervalMin", _dur),
    ("sync_coordinate_rate_target", "SyncCoordinateRateTarget", _same),
    ("tls_min_version", "TLSMinVersion", _same),
    ("tls_prefer_server_cipher_suites", "TLSPreferServerCipherSuites", _same),
    ("translate_wan_addrs", "TranslateWANAddrs", _same),
    ("unix_sockets.group", "UnixSocketGroup", _same),
    ("unix_sockets.mode", "UnixSocketMode", _same),
    ("unix_sockets.user", "UnixSocketUser", _same),
    ("version_prerelease", "VersionPrerelease", _same),
)
_GOSSIP = (("gossip_nodes", "GossipNodes", _same), ("gossip_interval", "GossipInterval", _dur),
           ("probe_interval", "ProbeInterval", _dur), ("probe_timeout", "ProbeTimeout", _dur),
           ("suspicion_mult", "SuspicionMult", _same),
           ("retransmit_mult", "RetransmitMult", _same))
_TELEMETRY = (("circonus_api_app", "CirconusAPIApp"), ("circonus_api_url", "CirconusAPIURL"),
              ("circonus_broker_id", "CirconusBrokerID"),
              ("circonus_broker_select_tag", "CirconusBrokerSelectTag"),
              ("circonus_check_display_name", "CirconusCheckDisplayName"),
              ("circonus_check_force_metric_activation", "CirconusCheckForceMetricActivation"),
              ("circonus_check_id", "CirconusCheckID"),
              ("circonus_check_instance_id", "CirconusCheckInstanceID"),
              ("circonus_check_search_tag", "CirconusCheckSearchTag"),
              ("circonus_check_tags", "CirconusCheckTags"),
              ("circonus_submission_interval", "CirconusSubmissionInterval"),
              ("circonus_submission_url", "CirconusSubmissionURL"),
              ("disable_hostname", "DisableHostname"), ("dogstatsd_addr", "DogstatsdAddr"),
              ("dogstatsd_tags", "DogstatsdTags"), ("filter_default", "FilterDefault"),
              ("metrics_prefix", "MetricsPrefix"), ("statsd_address", "StatsdAddr"),
              ("statsite_address", "StatsiteAddr"))


def _get(settings: Mapping[str, Any], path: str) -> Any:
    node: Any = settings
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _addr(scheme: str, host: str, port: int) -> str:
    if host.startswith("unix://"):
        return host
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _listeners(hosts, port: int, *schemes: str) -> list[str]:
    if port <= 0:
        return []
    return [_addr(scheme, host, port) for host in hosts for scheme in schemes]


def debug_config(c, version: str) -> dict[str, Any]:
    """Consul's DebugConfig for the agent configured by ``c`` (an `AgentConfig`)."""
    settings: Mapping[str, Any] = getattr(c, "settings", {}) or {}
    out = copy.deepcopy(DEBUG_CONFIG)
    if c.dev:
        out.update(DEV_DEBUG_CONFIG)
    for path, key, convert in _PLAIN:
        value = _get(settings, path)
        if value is not None:
            out[key] = convert(value)
    _addresses(out, c, settings)
    _dns(out, c)
    _timings(out, c, settings)
    _logging(out, c, settings)
    _telemetry(out, settings)
    primary = settings.get("primary_datacenter") or c.datacenter
    out.update({
        "ACLDatacenter": primary, "PrimaryDatacenter": primary,
        "Bootstrap": c.bootstrap, "BootstrapExpect": c.bootstrap_expect,
        "Checks": [_check(spec, standalone=True) for spec in getattr(c, "checks", ())],
        "ConfigEntryBootstrap": [dict(e) for e in _get(settings, "config_entries.bootstrap")
                                 or ()],
        "ConnectCAConfig": dict(_get(settings, "connect.ca_config") or {}),
        "DataDir": c.data_dir, "Datacenter": c.datacenter, "DevMode": c.dev,
        "EnableLocalScriptChecks": c.enable_local_script_checks,
        "EnableRemoteScriptChecks": c.enable_script_checks, "EnableUI": c.ui,
        "KVMaxValueSize": c.kv_max_value_size, "LeaveOnTerm": c.leave_on_terminate,
        "NodeID": c.node_id, "NodeMeta": go_map(c.node_meta), "NodeName": c.node_name,
        "PidFile": c.pid_file, "ServerMode": c.server,
        "Services": [_service(d) for d in getattr(c, "services", ())],
        "SkipLeaveOnInt": c.skip_leave_on_interrupt,
        "UIContentPath": _ui_path(settings.get("ui_content_path", "/ui/")),
        "UIDir": c.ui_dir, "Version": version,
        "Watches": [{} for _ in c.watches],  # Consul shows each watch as an empty object
    })
    return out


def _addresses(out: dict, c, settings: Mapping[str, Any]) -> None:
    adv, bind, ports = c.advertise, c.bind_addr, c.ports
    adv_wan = settings.get("advertise_addr_wan") or adv
    client = list(getattr(c, "client_addrs", ()) or (c.client_addr,))
    http = list(getattr(c, "http_addrs", ()) or ([c.http_addr] if c.http_addr else client))
    dns = list(getattr(c, "dns_addrs", ()) or ([c.dns_addr] if c.dns_addr else client))
    addresses = settings.get("addresses", {})
    https = addresses.get("https", "").split() or client
    grpc = addresses.get("grpc", "").split() or client
    https_port = _get(settings, "ports.https")
    https_port = -1 if https_port is None else https_port
    serf_lan = settings.get("serf_lan") or bind
    serf_wan = settings.get("serf_wan") or bind
    tagged = {**settings.get("tagged_addresses", {}), "lan": adv, "wan": adv_wan}
    for name, value in (("lan", adv), ("wan", adv_wan)):
        tagged[f"{name}_ipv{6 if ':' in value else 4}"] = value
    out.update({
        "AdvertiseAddrLAN": adv, "AdvertiseAddrWAN": adv_wan, "BindAddr": bind,
        "ClientAddrs": client,
        "DNSAddrs": _listeners(dns, ports.dns, "tcp", "udp"), "DNSPort": ports.dns,
        "GRPCAddrs": _listeners(grpc, ports.grpc, "tcp"), "GRPCPort": ports.grpc,
        "HTTPAddrs": _listeners(http, ports.http, "tcp"), "HTTPPort": ports.http,
        "HTTPSAddrs": _listeners(https, https_port, "tcp"), "HTTPSPort": https_port,
        "RPCAdvertiseAddr": _addr("tcp", adv, ports.server),
        "RPCBindAddr": _addr("tcp", bind, ports.server),
        "SerfAdvertiseAddrLAN": _addr("tcp", adv, ports.serf_lan),
        "SerfAdvertiseAddrWAN": _addr("tcp", adv_wan, ports.serf_wan),
        "SerfBindAddrLAN": _addr("tcp", serf_lan, ports.serf_lan),
        "SerfBindAddrWAN": _addr("tcp", serf_wan, ports.serf_wan),
        "SerfPortLAN": ports.serf_lan, "SerfPortWAN": ports.serf_wan,
        "ServerPort": ports.server, "TaggedAddresses": go_map(tagged),
    })


def _dns(out: dict, c) -> None:
    d = c.dns_config
    out.update({
        "DNSARecordLimit": d.a_record_limit, "DNSAllowStale": d.allow_stale,
        "DNSAltDomain": c.alt_domain, "DNSCacheMaxAge": go_duration(d.cache_max_age),
        "DNSDisableCompression": d.disable_compression, "DNSDomain": c.domain,
        "DNSEnableTruncate": d.enable_truncate, "DNSMaxStale": go_duration(d.max_stale),
        "DNSNodeMetaTXT": d.enable_additional_node_meta_txt,
        "DNSNodeTTL": go_duration(d.node_ttl), "DNSOnlyPassing": d.only_passing,
        "DNSRecursorTimeout": go_duration(d.recursor_timeout),
        "DNSRecursors": list(c.recursors),
        "DNSSOA": {"Expire": d.soa.expire, "Minttl": d.soa.min_ttl, "Refresh": d.soa.refresh,
                   "Retry": d.soa.retry},
        "DNSServiceTTL": go_map({k: go_duration(v) for k, v in d.service_ttl.items()}),
        "DNSUDPAnswerLimit": d.udp_answer_limit, "DNSUseCache": d.use_cache,
    })


def _timings(out: dict, c, settings: Mapping[str, Any]) -> None:
    multiplier = _get(settings, "performance.raft_multiplier")
    raft = settings.get("consul", {}).get("raft", {})
    if multiplier or raft or not c.dev:
        for key, base in _RAFT_BASE.items():
            name = {"ConsulRaftElectionTimeout": "election_timeout",
                    "ConsulRaftHeartbeatTimeout": "heartbeat_timeout",
                    "ConsulRaftLeaderLeaseTimeout": "leader_lease_timeout"}[key]
            seconds = parse_duration(raft[name]) if name in raft else base
            if multiplier or not c.dev:
                seconds *= multiplier or 5
            out[key] = go_duration(seconds)
    for wan in (False, True):
        block = settings.get("gossip_wan" if wan else "gossip_lan", {})
        for setting, suffix, convert in _GOSSIP:
            if setting in block:
                out[f"Gossip{'WAN' if wan else 'LAN'}{suffix}"] = convert(block[setting])


def _logging(out: dict, c, settings: Mapping[str, Any]) -> None:
    logging = out["Logging"]
    given = settings.get("log_level")
    # Consul shows the level as the user spelled it; ours is normalised, so show that.
    logging["LogLevel"] = given if given else _LOG_LEVELS.get(c.log_level, c.log_level.upper())
    logging["EnableSyslog"] = c.enable_syslog
    for setting, key, convert in (("log_file", "LogFilePath", _same),
                                  ("log_json", "LogJSON", _same),
                                  ("log_rotate_bytes", "LogRotateBytes", _same),
                                  ("log_rotate_duration", "LogRotateDuration", _dur),
                                  ("log_rotate_max_files", "LogRotateMaxFiles", _same),
                                  ("syslog_facility", "SyslogFacility", _same)):
        if setting in settings:
            logging[key] = convert(settings[setting])


def _telemetry(out: dict, settings: Mapping[str, Any]) -> None:
    t = settings.get("telemetry", {})
    telemetry = out["Telemetry"]
    for setting, key in _TELEMETRY:
        if setting in t:
            telemetry[key] = list(t[setting]) if isinstance(t[setting], list) else t[setting]
    if "prometheus_retention_time" in t:
        telemetry["PrometheusRetentionTime"] = _dur(t["prometheus_retention_time"])
    for rule in t.get("prefix_filter", ()):
        if rule.startswith("+"):
            telemetry["AllowedPrefixes"].append(rule[1:])
        elif rule.startswith("-"):
            telemetry["BlockedPrefixes"].append(rule[1:])


def _ui_path(path: str) -> str:
    return "/" + path.strip("/") + "/" if path.strip("/") else "/"


def _check(spec, *, standalone: bool) -> dict[str, Any]:
    d = spec.definition
    out = {
        "AliasNode": spec.alias_node, "AliasService": spec.alias_service, "Body": d.body,
        "DeregisterCriticalServiceAfter": go_duration(d.deregister_critical_service_after),
        "DockerContainerID": spec.docker_container_id,
        "FailuresBeforeCritical": spec.failures_before_critical, "GRPC": spec.grpc,
        "GRPCUseTLS": spec.grpc_use_tls, "HTTP": d.http,
        "Header": {k: list(v) for k, v in sorted((d.header or {}).items())},
        "Interval": go_duration(d.interval), "Method": d.method,
        "Name": spec.name if standalone else "", "Notes": spec.notes,
        "OutputMaxSize": spec.output_max_size or 4096, "ScriptArgs": list(spec.args),
        "Shell": spec.shell, "Status": "", "SuccessBeforePassing": spec.success_before_passing,
        "TCP": d.tcp, "TLSSkipVerify": d.tls_skip_verify, "TTL": go_duration(spec.ttl),
        "Timeout": go_duration(d.timeout),
    }
    if standalone:
        out.update({"EnterpriseMeta": {}, "ID": spec.check_id, "ServiceID": spec.service_id,
                    "Token": "hidden"})
    else:
        out.update({"CheckID": "", "ProxyGRPC": "", "ProxyHTTP": ""})
    return dict(sorted(out.items()))


# A service definition's single `check`: Waypost folds it into `checks`, so it shows empty.
_EMPTY_SERVICE_CHECK: Mapping[str, Any] = {
    "AliasNode": "", "AliasService": "", "Body": "", "CheckID": "",
    "DeregisterCriticalServiceAfter": "0s", "DockerContainerID": "", "FailuresBeforeCritical": 0,
    "GRPC": "", "GRPCUseTLS": False, "HTTP": "", "Header": {}, "Interval": "0s", "Method": "",
    "Name": "", "Notes": "", "OutputMaxSize": 0, "ProxyGRPC": "", "ProxyHTTP": "",
    "ScriptArgs": [], "Shell": "", "Status": "", "SuccessBeforePassing": 0, "TCP": "",
    "TLSSkipVerify": False, "TTL": "0s", "Timeout": "0s"}


def _service(definition) -> dict[str, Any]:
    s = definition.service
    return {
        "Address": s.address, "Check": dict(_EMPTY_SERVICE_CHECK),
        "Checks": [_check(spec, standalone=False) for spec in definition.checks],
        "Connect": None, "EnableTagOverride": s.enable_tag_override, "EnterpriseMeta": {},
        "ID": s.id, "Kind": s.kind, "Meta": go_map(s.meta), "Name": s.name, "Port": s.port,
        "Proxy": None,
        "TaggedAddresses": {k: {"Address": v.address, "Port": v.port}
                            for k, v in sorted(s.tagged_addresses.items())},
        "Tags": list(s.tags), "Token": "hidden",
        "Weights": {"Passing": s.weights.passing, "Warning": s.weights.warning},
    }
