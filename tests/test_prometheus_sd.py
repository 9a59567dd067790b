"""The requests Prometheus' `consul_sd_configs` makes, spelled as its Go client spells them.

Debian's prometheus package is built without Consul discovery, so the real binary cannot run it
here; these are the calls of Prometheus 2.x's discovery/consul (through hashicorp/consul/api):
agent self for the datacenter, then blocking `catalog/services` and `health/service/<name>`
with `stale=`, `wait=<ms>ms` and `index=`.
"""

from __future__ import annotations

import json
import threading
import time


def test_prometheus_discovery_sequence(agent):
    status, _, self_info = agent.json("GET", "/v1/agent/self")
    assert status == 200 and self_info["Config"]["Datacenter"] == "dc1"

    status, headers, services = agent.json("GET", "/v1/catalog/services?stale=&wait=120000ms")
    assert status == 200 and "consul" in services
    index = int(headers["X-Consul-Index"])

    # A new service wakes the parked services watch.
    result = {}

    def watch():
        result["answer"] = agent.json(
            "GET", f"/v1/catalog/services?index={index}&stale=&wait=120000ms")
    waiter = threading.Thread(target=watch)
    waiter.start()
    time.sleep(0.3)
    agent.request("PUT", "/v1/catalog/register", json.dumps({
        "Node": "prom-node", "Address": "10.7.0.1", "NodeMeta": {"rack": "r1"},
        "Service": {"ID": "app-1", "Service": "prom-app", "Port": 9100, "Tags": ["prod"],
                    "Meta": {"team": "obs"}},
        "Check": {"CheckID": "app-alive", "Name": "alive", "Status": "passing",
                  "ServiceID": "app-1"}}))
    waiter.join(10)
    status, headers, services = result["answer"]
    assert status == 200 and services["prom-app"] == ["prod"]
    assert int(headers["X-Consul-Index"]) > index

    status, headers, nodes = agent.json("GET", "/v1/health/service/prom-app?stale=&wait=120000ms")
    assert status == 200 and len(nodes) == 1
    entry = nodes[0]
    # The fields Prometheus turns into __meta_consul_* labels.
    assert entry["Node"]["Node"] == "prom-node"
    assert entry["Node"]["Address"] == "10.7.0.1"
    assert entry["Node"]["Meta"] == {"rack": "r1"}
    assert entry["Node"]["Datacenter"] == "dc1"
    assert entry["Node"]["TaggedAddresses"] in (None, {})
    assert entry["Service"]["ID"] == "app-1"
    assert entry["Service"]["Address"] == ""
    assert entry["Service"]["Port"] == 9100
    assert entry["Service"]["Tags"] == ["prod"]
    assert entry["Service"]["Meta"] == {"team": "obs"}
    assert [c["Status"] for c in entry["Checks"]] == ["passing"]

    # Deregistration wakes the per-service watch with an empty list.
    index = int(headers["X-Consul-Index"])
    result.clear()

    def watch_service():
        result["answer"] = agent.json(
            "GET", f"/v1/health/service/prom-app?index={index}&stale=&wait=120000ms")
    waiter = threading.Thread(target=watch_service)
    waiter.start()
    time.sleep(0.3)
    agent.request("PUT", "/v1/catalog/deregister", json.dumps({"Node": "prom-node"}))
    waiter.join(10)
    status, headers, nodes = result["answer"]
    assert status == 200 and nodes == [] and int(headers["X-Consul-Index"]) > index
