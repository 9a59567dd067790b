#!/usr/bin/env python3
"""Gossip in simulation: how long SWIM takes to detect a failure and to spread a join.

Runs the pure SWIM state machine (agent/gossip/swim.py) in the deterministic simulator
(tests/gossip_sim.py) with Consul's LAN settings (memberlist DefaultLANConfig). For each pool
size: a converged pool, then a new member joins through one push-pull (time and gossip rounds
until every member lists it alive), then a member crashes (time until the first member and
until every member marks it failed), then the packets and bytes each member sent per simulated
second. The figures are simulated seconds, not wall-clock; the wall time of the run is shown
so the simulator's own cost is visible. Memberlist's expectations are printed beside them:
the minimum suspicion timeout for the size (a lower bound on detection) and its maximum.

    python bench/gossip_bench.py --quick            # 100 and 1,000 members
    python bench/gossip_bench.py                    # 100, 1,000 and 5,000 members (~1 min)
    python bench/gossip_bench.py --sizes 200 --loss 0.05 --seed 3

Real processes (20 agents: CPU, bytes, req/s, detection, beside Consul): gossip_cluster_bench.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.gossip.messages import NodeState  # noqa: E402
from agent.gossip.suspicion import suspicion_timeout  # noqa: E402
from agent.gossip.swim_config import SwimConfig  # noqa: E402
from tests.gossip_sim import NetConfig, Simulation  # noqa: E402


def run(n: int, seed: int, loss: float, tcp_pings: bool) -> dict[str, float]:
    wall = time.perf_counter()
    config = replace(SwimConfig.lan(), disable_tcp_pings=not tcp_pings)
    sim = Simulation(seed, config=config, net=NetConfig(loss=loss))
    pool = sim.add_converged_pool(n)
    built = time.perf_counter() - wall
    sim.run_for(2.0)

    new = sim.add_node(join=[pool[0].name])
    t0 = sim.now
    sim.run_for(60.0, lambda: sim.all_see(new.name, NodeState.ALIVE))
    join_all = sim.now - t0

    sim.run_for(2.0)
    crashed = pool[n // 2].name
    packets0, bytes0 = sim.stats.packets, sim.stats.bytes
    sim.crash(crashed)
    t1 = sim.now
    low = suspicion_timeout(config.suspicion_mult, n + 1, config.probe_interval)
    high = config.suspicion_max_timeout_mult * low
    sim.run_for(2 * n * config.probe_interval + high + 5,
                lambda: sim.all_see(crashed, NodeState.DEAD))
    detect_all = sim.now - t1
    first = min((e[0] for node in sim.live_nodes() for e in node.recorder.events
                 if e[1] == "leave" and e[2] == crashed), default=float("nan"))
    elapsed = sim.now - t1
    members = len(sim.live_nodes())
    return {
        "n": n, "join_s": join_all, "join_rounds": join_all / config.gossip_interval,
        "detect_first_s": first - t1, "detect_all_s": detect_all,
        "suspicion_min_s": low, "suspicion_max_s": high,
        "pkts_per_member_s": (sim.stats.packets - packets0) / members / elapsed,
        "bytes_per_member_s": (sim.stats.bytes - bytes0) / members / elapsed,
        "build_wall_s": built, "wall_s": time.perf_counter() - wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=None, help="comma-separated pool sizes")
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 members only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loss", type=float, default=0.0, help="packet loss probability")
    parser.add_argument("--no-tcp-pings", action="store_true",
                        help="disable memberlist's TCP fallback probe")
    args = parser.parse_args()
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [100, 1000] if args.quick else [100, 1000, 5000]
    print(f"SWIM simulation, LAN config, seed {args.seed}, loss {args.loss:.0%}, "
          f"TCP pings {'off' if args.no_tcp_pings else 'on'}")
    header = (f"{'members':>8} {'join(s)':>8} {'rounds':>7} {'detect1(s)':>10} "
              f"{'detectAll(s)':>12} {'susp min/max(s)':>16} {'pkt/s/mbr':>9} "
              f"{'B/s/mbr':>8} {'wall(s)':>8}")
    print(header)
    for n in sizes:
        r = run(n, args.seed, args.loss, not args.no_tcp_pings)
        print(f"{r['n']:>8} {r['join_s']:>8.1f} {r['join_rounds']:>7.0f} "
              f"{r['detect_first_s']:>10.1f} {r['detect_all_s']:>12.1f} "
              f"{r['suspicion_min_s']:>7.1f}/{r['suspicion_max_s']:<8.1f} "
              f"{r['pkts_per_member_s']:>9.1f} {r['bytes_per_member_s']:>8.0f} "
              f"{r['wall_s']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
