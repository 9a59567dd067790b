"""/v1/operator/keyring: list (GET), install (POST), use (PUT) and remove (DELETE) gossip keys.

Goes through `facade.gossip.keyring` (`agent.gossip.control.GossipControl`). Answers as Consul
1.8.7 does: a list of per-pool responses (`WAN`, `Datacenter`, `Segment`, `Messages` when
any, `Keys`, `PrimaryKeys`, `NumNodes`); a failed operation is a 500 whose body is Go's
multierror text ("dc1 (LAN) error: 1/3 nodes reported failure" and each node's message), which
Consul's CLI prints as is; malformed requests are "Bad request: ..." 400s. Waypost has no WAN
pool yet, so only the LAN pool answers (Consul's `-local-only` view).
"""

from __future__ import annotations

import re

from agent.errors import InvalidRequest, WaypostError
from gateway.http.decode import json_body
from gateway.http.results import EMPTY

# Serf's keyring query names, which `GossipControl.keyring` takes.
LIST_KEYS, INSTALL_KEY, USE_KEY, REMOVE_KEY = "list-keys", "install-key", "use-key", "remove-key"
_OPS = {"GET": LIST_KEYS, "HEAD": LIST_KEYS, "POST": INSTALL_KEY, "PUT": USE_KEY,
        "DELETE": REMOVE_KEY}
_NO_GOSSIP = "This agent is not a member of a gossip pool"
_ATOI = re.compile(r"[+-]?[0-9]+")
_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
          "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_GO_TYPES = {dict: "object", list: "array", str: "string", bool: "bool", int: "number",
             float: "number"}


def _bad(reason: str) -> InvalidRequest:
    # Consul's BadRequestError, which its HTTP wrapper prefixes so.
    return InvalidRequest(f"Bad request: {reason}")


def _key_of(request) -> str:
    """keyringArgs.Key from the body, with Go's decoding rules (field names ignore case)."""
    if not request.body.strip():
        raise _bad("Request decode failed: EOF")
    try:
        doc = json_body(request)
    except InvalidRequest as exc:
        raise _bad(str(exc)) from None
    if doc is None:
        return ""
    if not isinstance(doc, dict):
        raise _bad(f"Request decode failed: json: cannot unmarshal {_GO_TYPES[type(doc)]} "
                   "into Go value of type agent.keyringArgs")
    key = ""
    for name, value in doc.items():
        if name.lower() != "key" or value is None:
            continue
        if not isinstance(value, str):
            raise _bad(f"Request decode failed: json: cannot unmarshal {_GO_TYPES[type(value)]}"
                       " into Go struct field keyringArgs.Key of type string")
        key = value
    return key


def _relay_factor(request) -> int:
    text = request.query.get("relay-factor", [""])[0]
    if not text:
        return 0
    if not _ATOI.fullmatch(text):
        raise _bad(f'Error parsing relay factor: strconv.Atoi: parsing "{text}": '
                   "invalid syntax")
    n = int(text)
    if not 0 <= n <= 5:
        raise _bad("Invalid relay-factor: Relay factor must be in range: [0, 5]")
    return n


def _local_only(request, op: str) -> None:
    text = request.query.get("local-only", [""])[0]
    if not text:
        return
    if text not in _BOOLS:
        raise _bad(f'Error parsing local-only: strconv.ParseBool: parsing "{text}": '
                   "invalid syntax")
    if _BOOLS[text] and op != LIST_KEYS:
        raise _bad("Invalid use of local-only: local-only can only be set for list requests")


def encode_outcome(outcome) -> dict:
    """One pool's KeyringResponse as Consul's JSON has it (map keys sorted, as Go writes)."""
    s = outcome.summary
    body: dict = {"WAN": False, "Datacenter": outcome.datacenter, "Segment": ""}
    if s.messages:
        body["Messages"] = dict(sorted(s.messages.items()))
    body["Keys"] = dict(sorted(s.keys.items()))
    body["PrimaryKeys"] = dict(sorted(s.primary_keys.items()))
    body["NumNodes"] = s.num_nodes
    return body


def errors_of(outcome) -> str | None:
    """Consul's keyringErrorsOrNil as Go's multierror prints it; None when it went well."""
    if not outcome.error:
        return None
    lines = [f"{outcome.datacenter} (LAN) error: {outcome.error}"]
    lines += [f"{node}: {message}" for node, message in sorted(outcome.summary.messages.items())]
    head = "1 error occurred" if len(lines) == 1 else f"{len(lines)} errors occurred"
    return head + ":\n" + "".join(f"\t* {line}\n" for line in lines) + "\n"


def keyring(facade, request, params, arg):
    op = _OPS[request.method]
    key = _key_of(request) if op != LIST_KEYS else ""
    relay_factor = _relay_factor(request)
    _local_only(request, op)
    if facade.gossip is None:
        raise WaypostError(_NO_GOSSIP)

    def answered(outcome):
        problem = errors_of(outcome)
        if problem is not None:
            raise WaypostError(problem)
        return [encode_outcome(outcome)] if op == LIST_KEYS else EMPTY
    return facade.gossip.keyring(op, key, relay_factor).addCallback(answered)
