"""Transactions: every KV verb and Consul's error texts on the pure store, atomicity, the
leader's pre-checks, and /v1/txn's answers against a real agent (reference 76)."""

from __future__ import annotations

import base64
import json

from agent.fsm.commands import KVOperation, Txn
from agent.structs import KVEntry, TxnError
from tests.test_sessions import Core


def op(verb, key, value=None, index=0, session="", flags=0):
    return KVOperation(verb, KVEntry(key, value, flags=flags, session=session), index)


def txn(core, *ops):
    return core.result(core.facade.write(Txn(tuple(ops)))).value


def test_writes_and_reads_apply_at_one_index():
    core = Core()
    core.result(core.facade.write(KVOperation("set", KVEntry("t/old", b"1"))))
    before = core.store.index
    outcome = txn(core, op("set", "t/a", b"A", flags=7), op("get", "t/old"),
                  op("cas", "t/b", b"B", index=0), op("get-tree", "t/"), op("delete", "t/old"),
                  op("check-not-exists", "t/old"))
    assert outcome.ok and outcome.errors is None
    index = before + 1
    set_a, get_old, cas_b, *tree = outcome.results
    assert (set_a.key, set_a.value, set_a.flags, set_a.modify_index) == ("t/a", None, 7, index)
    assert get_old.value == b"1"  # a get keeps its value, writes are blanked
    assert cas_b.value is None and cas_b.create_index == index
    assert [(e.key, e.value) for e in tree] == [("t/a", b"A"), ("t/b", b"B"), ("t/old", b"1")]
    assert core.store.index == index and core.store.kv.get("t/old")[1] is None


def test_failure_applies_nothing_and_reports_every_failing_op():
    core = Core()
    core.result(core.facade.write(KVOperation("set", KVEntry("k", b"1"))))
    modify = core.entry("k").modify_index
    before = dict(core.store.kv.entries)
    outcome = txn(core, op("set", "new", b"x"), op("delete", "k"),
                  op("check-index", "k", index=modify), op("get", "missing"),
                  op("cas", "k", b"2", index=modify + 5), op("frobnicate", "k"))
    assert outcome.results is None
    assert outcome.errors == (
        TxnError(2, 'failed to check index, key "k" doesn\'t exist'),
        TxnError(3, 'key "missing" doesn\'t exist'),
        TxnError(4, 'failed to set key "k", index is stale'),
        TxnError(5, 'unknown KV verb "frobnicate"'))
    assert core.store.kv.entries == before


def test_error_texts_of_each_verb():
    core = Core()
    sid, other = core.create(), core.create()
    core.lock("held", sid)
    cases = [
        (op("check-index", "held", index=1), ("failed index check for key \"held\", current "
                                               f"modify index {core.entry('held').modify_index} "
                                               "!= 1")),
        (op("check-session", "held", session=other), ("failed session check for key \"held\", "
                                                      f'current session "{sid}" != "{other}"')),
        (op("check-session", "nothing"), 'failed to check session, key "nothing" doesn\'t exist'),
        (op("check-not-exists", "held"), 'key "held" exists'),
        (op("lock", "held", session=other), 'failed to lock key "held", lock is already held'),
        (op("lock", "x", session="bogus"), 'invalid session "bogus"'),
        (op("lock", "x"), "missing session"),
        (op("unlock", "held", session=other),
         "failed to unlock key \"held\", lock isn't held, or is held by another session"),
        (op("delete-cas", "held", index=1), 'failed to delete key "held", index is stale'),
        (op("get", ""), "Must provide key"),
    ]
    for operation, text in cases:
        assert txn(core, operation).errors == (TxnError(0, text),), operation


def test_lock_unlock_and_check_session_in_a_transaction():
    core = Core()
    sid = core.create()
    outcome = txn(core, op("lock", "l", b"me", session=sid), op("check-session", "l", session=sid))
    assert outcome.ok and outcome.results[0].lock_index == 1 and outcome.results[1].session == sid
    assert txn(core, op("unlock", "l", session=sid)).ok
    assert core.entry("l").session == "" and core.entry("l").lock_index == 1


def test_lock_delay_refuses_a_transaction_lock_before_the_log():
    core = Core()
    a, b = core.create(), core.create()
    core.lock("k", a)
    core.result(core.destroy(a))
    index = core.store.index
    outcome = core.result(core.facade.write(Txn((op("set", "y", b"1"),
                                                 op("lock", "k", session=b))))).value
    assert outcome.errors == (TxnError(1, 'failed to lock key "k" due to lock delay'),)
    assert core.store.index == index  # refused before reaching the log
    core.clock.advance(15)
    assert txn(core, op("lock", "k", session=b)).ok


def test_read_only_transaction_needs_no_log_entry():
    core = Core()
    index = core.store.index
    assert txn(core, op("get-tree", "nothing/")).results == ()
    assert txn(core, op("get-tree", "")).errors == (TxnError(0, "Must provide key"),)
    assert core.store.index == index


# --- HTTP --------------------------------------------------------------------------------------


def test_http_txn_success_shape(agent):
    agent.request("PUT", "/v1/kv/tx/port?flags=42", "8080")
    body = [{"KV": {"Verb": "set", "Key": "tx/a", "Value": "YQ=="}},
            {"KV": {"Verb": "get", "Key": "tx/port"}}]
    status, headers, answer = agent.json("PUT", "/v1/txn", body)
    assert status == 200 and "X-Consul-Index" not in headers
    assert list(answer) == ["Results", "Errors"] and answer["Errors"] is None
    set_a, get_port = (r["KV"] for r in answer["Results"])
    assert list(set_a) == ["LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"]
    assert (set_a["Key"], set_a["Value"], set_a["CreateIndex"]) == ("tx/a", None,
                                                                   set_a["ModifyIndex"])
    assert (get_port["Flags"], base64.b64decode(get_port["Value"])) == (42, b"8080")
    assert base64.b64decode(agent.json("GET", "/v1/kv/tx/a")[2][0]["Value"]) == b"a"


def test_http_txn_conflict_changes_nothing(agent):
    body = [{"KV": {"Verb": "set", "Key": "tx/never", "Value": "eA=="}},
            {"KV": {"Verb": "check-index", "Key": "tx/port", "Index": 1}},
            {"kv": {"verb": "delete-tree", "key": "tx/"}}]
    status, headers, answer = agent.json("PUT", "/v1/txn", body)
    assert status == 409 and headers["Content-Type"] == "application/json"
    assert answer["Results"] is None and len(answer["Errors"]) == 1
    assert answer["Errors"][0]["OpIndex"] == 1
    assert answer["Errors"][0]["What"].startswith('failed index check for key "tx/port", '
                                                  "current modify index ")
    assert agent.request("GET", "/v1/kv/tx/never")[0] == 404
    assert agent.request("GET", "/v1/kv/tx/port")[0] == 200


def test_http_txn_read_only_headers_and_sessions(agent):
    status, headers, answer = agent.json("PUT", "/v1/txn", [{"KV": {"Verb": "get-tree",
                                                                    "Key": "tx/"}}])
    assert status == 200 and headers["X-Consul-KnownLeader"] == "true"
    assert [r["KV"]["Key"] for r in answer["Results"]][:1] == ["tx/a"]
    _, _, session = agent.json("PUT", "/v1/session/create", {"Name": "txn"})
    sid = session["ID"]
    lock = [{"KV": {"Verb": "lock", "Key": "tx/lock", "Value": "bWU=", "Session": sid}}]
    _, _, answer = agent.json("PUT", "/v1/txn", lock)
    assert answer["Results"][0]["KV"]["Session"] == sid
    assert answer["Results"][0]["KV"]["LockIndex"] == 1
    agent.json("PUT", f"/v1/session/destroy/{sid}")


def test_http_txn_malformed_and_limits(agent):
    too_many = [{"KV": {"Verb": "get", "Key": f"k{i}"}} for i in range(65)]
    status, _, text = agent.request("PUT", "/v1/txn", json.dumps(too_many))
    assert (status, text.decode()) == (413, "Transaction contains too many operations (65 > 64)")
    for bad in ('{"KV": {}}', "[{\"KV\": {\"Verb\": \"set\", \"Key\": \"a\", \"Value\": \"@@\"}}]",
                '[{"KV": {"Verb": "set", "Key": "a", "Flags": "x"}}]', "[", ""):
        status, _, text = agent.request("PUT", "/v1/txn", bad)
        assert status == 400 and text.decode().startswith("Failed to parse body: "), bad
    assert agent.request("GET", "/v1/txn")[0] == 405
