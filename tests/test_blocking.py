"""Blocking queries (`?index=&wait=`) over real sockets against a real `waypost agent -dev`.

A parked query must return as soon as something it reads changes (with a larger
X-Consul-Index), and otherwise after `wait` plus at most wait/16 of jitter with the same index.
Each test uses its own keys, services and nodes, so the module-scoped agent can be shared.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import socket
import threading
import time

import pytest

from agent.errors import InvalidRequest
from agent.rpc.blocking import wait_time
from agent.rpc.options import DEFAULT_WAIT, JITTER_FRACTION, MAX_WAIT, QueryOptions
from gateway.http.params import parse_query_params

WAIT = 1.0
# Consul adds up to wait/16 of jitter; allow half a second for the machine on top.
TIMEOUT_LOW, TIMEOUT_HIGH = WAIT, WAIT * 17 / 16 + 0.5
WOKEN_WITHIN = 1.5  # a woken query answers long before its 5s wait


def index_of(headers) -> int:
    return int(headers["X-Consul-Index"])


class Waiter(threading.Thread):
    """A blocking GET in a thread; `.result` is (status, headers, body, elapsed)."""

    def __init__(self, agent, path: str) -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.path = path
        self.result = None

    def run(self) -> None:
        t0 = time.monotonic()
        status, headers, body = self.agent.request("GET", self.path)
        self.result = (status, headers, body, time.monotonic() - t0)

    def finish(self, timeout: float = 15.0):
        self.join(timeout)
        assert not self.is_alive(), f"blocking query {self.path} never returned"
        return self.result


def park(agent, path: str, settle: float = 0.25) -> Waiter:
    waiter = Waiter(agent, path)
    waiter.start()
    time.sleep(settle)  # let the request reach the agent and park
    assert waiter.is_alive(), f"{path} returned without blocking: {waiter.result}"
    return waiter


def put(agent, path: str, body=b"") -> None:
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    status, _, data = agent.request("PUT", path, body)
    assert status == 200, (path, status, data)


def read_index(agent, path: str) -> int:
    status, headers, _ = agent.request("GET", path)
    assert status in (200, 404)
    return index_of(headers)


# --- wakes on change --------------------------------------------------------------------------


def test_kv_key_wakes_on_write(agent):
    put(agent, "/v1/kv/bq/key/k", "v1")
    index = read_index(agent, "/v1/kv/bq/key/k")
    waiter = park(agent, f"/v1/kv/bq/key/k?index={index}&wait=5s")
    put(agent, "/v1/kv/bq/key/k", "v2")
    status, headers, body, elapsed = waiter.finish()
    assert status == 200
    assert index_of(headers) > index
    assert json.loads(body)[0]["Value"] == "djI="  # base64 of "v2"
    assert elapsed < WOKEN_WITHIN


def test_kv_missing_key_wakes_on_create(agent):
    status, headers, _ = agent.request("GET", "/v1/kv/bq/missing/k")
    assert status == 404
    index = index_of(headers)
    waiter = park(agent, f"/v1/kv/bq/missing/k?index={index}&wait=5s")
    put(agent, "/v1/kv/bq/missing/k", "now")
    status, headers, body, elapsed = waiter.finish()
    assert status == 200
    assert index_of(headers) > index
    assert elapsed < WOKEN_WITHIN


def test_kv_key_wakes_on_delete(agent):
    put(agent, "/v1/kv/bq/del/k", "v")
    index = read_index(agent, "/v1/kv/bq/del/k")
    waiter = park(agent, f"/v1/kv/bq/del/k?index={index}&wait=5s")
    status, _, _ = agent.request("DELETE", "/v1/kv/bq/del/k")
    assert status == 200
    status, headers, _, elapsed = waiter.finish()
    assert status == 404
    assert index_of(headers) > index
    assert elapsed < WOKEN_WITHIN


def test_kv_recurse_wakes_on_write_below_prefix(agent):
    put(agent, "/v1/kv/bq/rec/a", "1")
    index = read_index(agent, "/v1/kv/bq/rec/?recurse")
    waiter = park(agent, f"/v1/kv/bq/rec/?recurse&index={index}&wait=5s")
    put(agent, "/v1/kv/bq/rec/deeper/b", "2")
    status, headers, body, elapsed = waiter.finish()
    assert status == 200
    assert index_of(headers) > index
    assert [e["Key"] for e in json.loads(body)] == ["bq/rec/a", "bq/rec/deeper/b"]
    assert elapsed < WOKEN_WITHIN


def test_kv_recurse_wakes_on_delete_below_prefix(agent):
    put(agent, "/v1/kv/bq/recdel/a", "1")
    put(agent, "/v1/kv/bq/recdel/b", "2")
    index = read_index(agent, "/v1/kv/bq/recdel/?recurse")
    waiter = park(agent, f"/v1/kv/bq/recdel/?recurse&index={index}&wait=5s")
    agent.request("DELETE", "/v1/kv/bq/recdel/a")
    status, headers, body, elapsed = waiter.finish()
    assert status == 200
    assert index_of(headers) > index  # tombstones keep the prefix index moving forward
    assert [e["Key"] for e in json.loads(body)] == ["bq/recdel/b"]
    assert elapsed < WOKEN_WITHIN


def test_kv_keys_wakes_on_new_key(agent):
    put(agent, "/v1/kv/bq/keys/a", "1")
    index = read_index(agent, "/v1/kv/bq/keys/?keys&separator=/")
    waiter = park(agent, f"/v1/kv/bq/keys/?keys&separator=/&index={index}&wait=5s")
    put(agent, "/v1/kv/bq/keys/sub/x", "2")
    status, headers, body, elapsed = waiter.finish()
    assert status == 200
    assert index_of(headers) > index
    assert json.loads(body) == ["bq/keys/a", "bq/keys/sub/"]
    assert elapsed < WOKEN_WITHIN


def test_catalog_services_wakes_on_register(agent):
    index = read_index(agent, "/v1/catalog/services")
    waiter = park(agent, f"/v1/catalog/services?index={index}&wait=5s")
    put(agent, "/v1/catalog/register",
        {"Node": "bq-node-svc", "Address": "10.9.0.1", "Service": {"Service": "bq-svc", "Port": 1}})
    status, headers, body, elapsed = waiter.finish()
    assert status == 200
    assert index_of(headers) > index
    assert "bq-svc" in json.loads(body)
    assert elapsed < WOKEN_WITHIN


def test_catalog_nodes_wakes_on_register(agent):
    index = read_index(agent, "/v1/catalog/nodes")
    waiter = park(agent, f"/v1/catalog/nodes?index={index}&wait=5s")
    put(agent, "/v1/catalog/register", {"Node": "bq-node-new", "Address": "10.9.0.2"})
    status, headers, body, elapsed = waiter.finish()
    assert status == 200
    assert index_of(headers) > index
    assert "bq-node-new" in {n["Node"] for n in json.loads(body)}
    assert elapsed < WOKEN_WITHIN


def test_health_service_wakes_when_ttl_check_passes(agent):
    put(agent, "/v1/agent/service/register",
        {"Name": "bq-health", "ID": "bq-health-1", "Port": 4000, "Check": {"TTL": "30s"}})
    status, headers, body = agent.request("GET", "/v1/health/service/bq-health?passing")
    assert status == 200 and json.loads(body) == []
    index = index_of(headers)
    waiter = park(agent, f"/v1/health/service/bq-health?passing&index={index}&wait=5s")
    put(agent, "/v1/agent/check/pass/service:bq-health-1")
    status, headers, body, elapsed = waiter.finish()
    assert status == 200
    assert index_of(headers) > index
    rows = json.loads(body)
    assert [r["Service"]["ID"] for r in rows] == ["bq-health-1"]
    assert rows[0]["Checks"][-1]["Status"] == "passing"
    assert elapsed < WOKEN_WITHIN
    put(agent, "/v1/agent/service/deregister/bq-health-1")


# --- times out ----------------------------------------------------------------------------------


def test_kv_timeout_returns_same_index_after_wait(agent):
    put(agent, "/v1/kv/bq/timeout/k", "v")
    index = read_index(agent, "/v1/kv/bq/timeout/k")
    t0 = time.monotonic()
    status, headers, body = agent.request("GET", f"/v1/kv/bq/timeout/k?index={index}&wait=1s")
    elapsed = time.monotonic() - t0
    assert status == 200
    assert index_of(headers) == index
    assert json.loads(body)[0]["Key"] == "bq/timeout/k"
    assert TIMEOUT_LOW <= elapsed <= TIMEOUT_HIGH


def test_unrelated_write_does_not_wake_kv_waiter(agent):
    put(agent, "/v1/kv/bq/quiet/k", "v")
    put(agent, "/v1/kv/bq/quiet/dir/a", "v")
    key_index = read_index(agent, "/v1/kv/bq/quiet/k")
    dir_index = read_index(agent, "/v1/kv/bq/quiet/dir/?recurse")
    key_waiter = park(agent, f"/v1/kv/bq/quiet/k?index={key_index}&wait=1s", settle=0)
    dir_waiter = park(agent, f"/v1/kv/bq/quiet/dir/?recurse&index={dir_index}&wait=1s")
    # Other prefixes, and a key the watched key is a string prefix of, but not the key itself.
    put(agent, "/v1/kv/bq/elsewhere/x", "1")
    put(agent, "/v1/kv/bq/quiet/kk", "1")
    put(agent, "/v1/kv/bq/quiet/dirx", "1")
    for waiter, index in ((key_waiter, key_index), (dir_waiter, dir_index)):
        status, headers, _, elapsed = waiter.finish()
        assert status == 200
        assert index_of(headers) == index
        assert elapsed >= TIMEOUT_LOW, f"{waiter.path} woke early"
        assert elapsed <= TIMEOUT_HIGH


def test_catalog_write_does_not_wake_kv_waiter(agent):
    put(agent, "/v1/kv/bq/cat-quiet", "v")
    index = read_index(agent, "/v1/kv/bq/cat-quiet")
    waiter = park(agent, f"/v1/kv/bq/cat-quiet?index={index}&wait=1s")
    put(agent, "/v1/catalog/register", {"Node": "bq-node-quiet", "Address": "10.9.0.3"})
    status, headers, _, elapsed = waiter.finish()
    assert status == 200
    assert index_of(headers) == index
    assert TIMEOUT_LOW <= elapsed <= TIMEOUT_HIGH


def test_index_in_the_future_blocks_until_timeout(agent):
    put(agent, "/v1/kv/bq/future/k", "v")
    index = read_index(agent, "/v1/kv/bq/future/k")
    t0 = time.monotonic()
    status, headers, _ = agent.request("GET", f"/v1/kv/bq/future/k?index={index + 10**6}&wait=1s")
    elapsed = time.monotonic() - t0
    assert status == 200
    assert index_of(headers) == index
    assert TIMEOUT_LOW <= elapsed <= TIMEOUT_HIGH


def test_index_zero_and_no_index_do_not_block(agent):
    put(agent, "/v1/kv/bq/noblock", "v")
    for path in ("/v1/kv/bq/noblock?index=0&wait=5s", "/v1/kv/bq/noblock?wait=5s"):
        t0 = time.monotonic()
        status, _, _ = agent.request("GET", path)
        assert status == 200
        assert time.monotonic() - t0 < 0.5


def test_stale_index_answers_at_once(agent):
    put(agent, "/v1/kv/bq/stale", "v1")
    old = read_index(agent, "/v1/kv/bq/stale")
    put(agent, "/v1/kv/bq/stale", "v2")
    t0 = time.monotonic()
    status, headers, _ = agent.request("GET", f"/v1/kv/bq/stale?index={old}&wait=5s")
    assert status == 200
    assert index_of(headers) > old
    assert time.monotonic() - t0 < 0.5


# --- wait parsing: cap and jitter (unit level) ------------------------------------------------


def _expected(seed: int, wait: float) -> float:
    return wait + random.Random(seed).random() * wait / JITTER_FRACTION


def _parse(query: dict) -> QueryOptions:
    return parse_query_params(query, {}, False).options


def _waited(query: dict, seed: int) -> float:
    """How long the core parks a read with these parameters (Consul's default, cap, jitter)."""
    return wait_time(_parse(query), random.Random(seed))


@pytest.mark.parametrize("wait, base", [
    ("1s", 1.0), ("250ms", 0.25), ("10m", MAX_WAIT), ("11m", MAX_WAIT), ("1h", MAX_WAIT),
    ("87600h", MAX_WAIT), ("0s", DEFAULT_WAIT), ("0", DEFAULT_WAIT),
])
def test_wait_is_capped_at_ten_minutes_with_jitter(wait, base):
    assert _parse({"index": ["7"], "wait": [wait]}).min_index == 7
    waited = _waited({"index": ["7"], "wait": [wait]}, 1234)
    assert waited == pytest.approx(_expected(1234, base))
    assert base <= waited <= base * 17 / 16


def test_default_wait_is_five_minutes_with_jitter():
    waited = _waited({"index": ["7"]}, 99)
    assert waited == pytest.approx(_expected(99, DEFAULT_WAIT))
    assert DEFAULT_WAIT <= waited <= DEFAULT_WAIT * 17 / 16


def test_jitter_spans_up_to_one_sixteenth():
    rng = random.Random(5)
    options = _parse({"index": ["3"], "wait": ["16s"]})
    waits = [wait_time(options, rng) for _ in range(500)]
    assert min(waits) >= 16.0 and max(waits) <= 17.0
    assert max(waits) - min(waits) > 0.9  # really spread, not a constant


@pytest.mark.parametrize("query, message", [
    ({"index": ["abc"]}, "Invalid index"),
    ({"index": ["-1"]}, "Invalid index"),
    ({"index": ["+1"]}, "Invalid index"),
    ({"index": [" 1"]}, "Invalid index"),
    ({"index": ["1_000"]}, "Invalid index"),
    ({"index": ["\u0661"]}, "Invalid index"),  # a non-ASCII digit
    ({"index": ["1.5"]}, "Invalid index"),
    ({"index": [str(2**64)]}, "Invalid index"),
    ({"index": ["1"], "wait": ["abc"]}, "Invalid wait time"),
    ({"index": ["1"], "wait": ["10"]}, "Invalid wait time"),
    ({"wait": ["abc"]}, "Invalid wait time"),  # parsed even without index, as Consul does
])
def test_bad_index_or_wait_is_invalid(query, message):
    with pytest.raises(InvalidRequest, match=f"^{message}$"):
        _parse(query)


def test_index_is_a_uint64():
    assert _parse({"index": [str(2**64 - 1)]}).min_index == 2**64 - 1


def test_empty_index_and_wait_count_as_absent():
    # Consul reads them with query.Get(...) != "".
    options = _parse({"index": [""], "wait": [""]})
    assert (options.min_index, options.wait) == (0, 0.0)
    assert _waited({"index": ["4"], "wait": [""]}, 3) == pytest.approx(_expected(3, DEFAULT_WAIT))


def test_negative_wait_means_the_default():
    # Go's ParseDuration takes "-1s"; Consul's blockingQuery then uses the default query time.
    assert _waited({"index": ["4"], "wait": ["-1s"]}, 8) == pytest.approx(
        _expected(8, DEFAULT_WAIT))


def test_no_index_means_no_blocking_whatever_wait_says():
    for query in ({"wait": ["5s"]}, {"index": ["0"], "wait": ["5s"]}):
        assert _parse(query).min_index == 0


# --- many waiters, disconnects, CAS races ----------------------------------------------------


def _recv_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    return status, headers, body


def test_200_parked_waiters_all_woken_by_one_put(agent):
    put(agent, "/v1/kv/bq/fan/k", "before")
    index = read_index(agent, "/v1/kv/bq/fan/k")
    request = (f"GET /v1/kv/bq/fan/k?index={index}&wait=20s HTTP/1.1\r\n"
               f"Host: 127.0.0.1\r\n\r\n").encode()
    socks = []
    try:
        # 199 parked + the PUT's own connection: Consul's default of 200 per client address.
        for _ in range(199):
            s = socket.create_connection(("127.0.0.1", agent.port), timeout=15)
            s.sendall(request)
            socks.append(s)
        time.sleep(0.5)
        t0 = time.monotonic()
        put(agent, "/v1/kv/bq/fan/k", "after")
        results = [_recv_response(s) for s in socks]
        elapsed = time.monotonic() - t0
    finally:
        for s in socks:
            s.close()
    assert elapsed < 5
    statuses = {r[0] for r in results}
    bodies = {r[2] for r in results}
    indexes = {r[1]["x-consul-index"] for r in results}
    assert statuses == {200}
    assert len(bodies) == 1 and len(indexes) == 1
    assert int(indexes.pop()) > index
    assert json.loads(bodies.pop())[0]["Value"] == "YWZ0ZXI="  # base64 of "after"


def test_client_disconnect_while_parked(agent):
    put(agent, "/v1/kv/bq/gone/k", "v")
    index = read_index(agent, "/v1/kv/bq/gone/k")
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        s.sendall(f"GET /v1/kv/bq/gone/k?index={index}&wait=30s HTTP/1.1\r\n"
                  f"Host: x\r\n\r\n".encode())
        s.close()
    # Half-closed too: the client stops sending but keeps reading.
    half = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
    half.sendall(f"GET /v1/kv/bq/gone/k?index={index}&wait=30s HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    half.shutdown(socket.SHUT_WR)
    time.sleep(0.3)
    # The waiters' watches fire into closed connections without harm...
    put(agent, "/v1/kv/bq/gone/k", "v2")
    # ...and the agent still serves plain and blocking requests.
    status, _, body = agent.request("GET", "/v1/kv/bq/gone/k?raw")
    assert (status, body) == (200, b"v2")
    status, _, _ = agent.request("GET", "/v1/status/leader")
    assert status == 200
    new_index = read_index(agent, "/v1/kv/bq/gone/k")
    waiter = park(agent, f"/v1/kv/bq/gone/k?index={new_index}&wait=5s")
    put(agent, "/v1/kv/bq/gone/k", "v3")
    status, headers, _, elapsed = waiter.finish()
    assert status == 200 and index_of(headers) > new_index and elapsed < WOKEN_WITHIN
    half.close()


def _conn(agent) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", agent.port, timeout=15)


def _get_counter(conn, key: str) -> tuple[int, int]:
    conn.request("GET", f"/v1/kv/{key}")
    response = conn.getresponse()
    entry = json.loads(response.read())[0]
    return entry["ModifyIndex"], int(base64.b64decode(entry["Value"]))


def _cas_put(conn, key: str, value: int, cas: int) -> bool:
    conn.request("PUT", f"/v1/kv/{key}?cas={cas}", body=str(value).encode())
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body
    return json.loads(body)


def test_cas_race_one_winner_per_round(agent):
    key = "bq/cas/rounds"
    put(agent, f"/v1/kv/{key}", "0")
    threads, rounds = 20, 5
    barrier = threading.Barrier(threads)
    wins = [[False] * threads for _ in range(rounds)]
    errors = []

    def worker(n: int) -> None:
        conn = _conn(agent)
        try:
            for r in range(rounds):
                barrier.wait()
                index, value = _get_counter(conn, key)
                barrier.wait()  # everyone has read the same index before anyone writes
                wins[r][n] = _cas_put(conn, key, value + 1, index)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()
        finally:
            conn.close()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert not errors, errors
    assert [sum(row) for row in wins] == [1] * rounds
    status, _, body = agent.request("GET", f"/v1/kv/{key}?raw")
    assert (status, body) == (200, str(rounds).encode())


def test_cas_race_free_running_counter(agent):
    key = "bq/cas/free"
    put(agent, f"/v1/kv/{key}", "0")
    threads, attempts = 20, 10
    successes = [0] * threads
    errors = []

    def worker(n: int) -> None:
        conn = _conn(agent)
        try:
            for _ in range(attempts):
                index, value = _get_counter(conn, key)
                if _cas_put(conn, key, value + 1, index):
                    successes[n] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            conn.close()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert not errors, errors
    total = sum(successes)
    assert total >= 1
    status, _, body = agent.request("GET", f"/v1/kv/{key}?raw")
    assert (status, body) == (200, str(total).encode())


def test_agent_logged_no_handler_failure(agent):
    """Disconnects, wake-ups and races above must not have logged a traceback."""
    log = agent.log_so_far()
    assert "Traceback" not in log, log[-3000:]
