"""Classifies one run of py-consul's suite (results.json) against known_failures.json.

Every failing test either has an entry for this target in known_failures.json (its class, the
reason and the issue that will fix it) or is *unexpected*. Known entries that passed are
*stale*: the list should shrink. Prints a summary, writes summary.json beside results.json, and
exits 1 when anything is unexpected.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

FAILED = ("failed", "error")


def _bucket(outcome: str) -> str:
    return "failed" if outcome in FAILED else outcome


def classify(results: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """The summary of one run: counts, failures by class, unexpected and stale test ids.

    Tests that need an ACL-enabled agent count as "not built" on targets the ACL rule names,
    whatever their outcome: a pass there would only mean the test did not check enforcement.
    """
    target = results["target"]
    tests: dict[str, dict[str, Any]] = results["results"]
    entries = {k: v for k, v in known["tests"].items() if target in v["targets"]}
    acl_rule = known["acl_fixture_tests"]
    not_built = sorted(t for t, r in tests.items() if r.get("acl") and target in acl_rule["targets"])
    counted = {t: r for t, r in tests.items() if t not in set(not_built)}
    by_class: dict[str, list[str]] = {}
    unexpected: dict[str, str] = {}
    for test_id, r in counted.items():
        if r["outcome"] not in FAILED:
            continue
        if test_id in entries:
            by_class.setdefault(entries[test_id]["class"], []).append(test_id)
        else:
            unexpected[test_id] = r["message"]
    # A newer-consul entry that passes here is no error (Waypost may already match the later
    # behaviour); any other entry that passes should leave the list.
    stale = sorted(t for t, e in entries.items()
                   if t in counted and counted[t]["outcome"] not in FAILED and e["class"] != "newer-consul")
    return {"target": target, "agent_version": results.get("agent_version", ""),
            "dropped_config_keys": results.get("dropped_config_keys", []),
            "total": dict(Counter(_bucket(r["outcome"]) for r in counted.values())),
            "agent_tests": dict(Counter(_bucket(r["outcome"]) for r in counted.values() if r["agent"])),
            "acl_not_built": not_built,
            "known_by_class": {k: sorted(v) for k, v in sorted(by_class.items())},
            "unexpected": dict(sorted(unexpected.items())), "stale": stale,
            "not_collected": sorted(t for t in entries if t not in tests)}


def render(summary: dict[str, Any], known: dict[str, Any]) -> str:
    def line(c: dict[str, int]) -> str:
        return ", ".join(f"{c.get(k, 0)} {k}" for k in ("passed", "failed", "skipped"))

    out = [f"== py-consul suite against {summary['target']} {summary['agent_version']}".rstrip(),
           f"all tests:              {line(summary['total'])}",
           f"tests using an agent:   {line(summary['agent_tests'])}"]
    if summary["acl_not_built"]:
        rule = known["acl_fixture_tests"]
        out.append(f"ACL tests, not built:   {len(summary['acl_not_built'])} "
                   f"(not counted above; {rule['issue']}: {rule['reason']})")
    if summary["dropped_config_keys"]:
        out.append(f"config keys left out:   {', '.join(summary['dropped_config_keys'])}")
    for cls, ids in summary["known_by_class"].items():
        out.append(f"known failures, {cls} ({known['classes'][cls]}): {len(ids)}")
        ids = sorted(ids, key=lambda t: (known["tests"][t]["issue"], t))
        for test_id in ids:
            entry = known["tests"][test_id]
            out.append(f"    {test_id}  [{entry['issue']}] {entry['reason']}")
    out.append(f"UNEXPECTED failures: {len(summary['unexpected'])}")
    out.extend(f"    {t}: {m}" for t, m in summary["unexpected"].items())
    if summary["stale"]:
        out.append(f"known failures that now pass (remove them from the list): {len(summary['stale'])}")
        out.extend(f"    {t}" for t in summary["stale"])
    if summary["not_collected"]:
        out.append(f"known failures not run (-k filter or renamed?): {len(summary['not_collected'])}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument("--known", type=Path, required=True)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text(encoding="utf-8"))
    known = json.loads(args.known.read_text(encoding="utf-8"))
    summary = classify(results, known)
    (args.results.parent / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(render(summary, known))
    return 1 if summary["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
