#!/usr/bin/env python3
"""Write-ahead log throughput and acknowledgement latency, fsync on.

N appenders each append one entry (200 bytes by default), wait for its acknowledgement
(durable: written and fdatasync'd) and append the next, for a fixed time. Printed per run:
appends/s, p50/p99 latency from `append` to the ack, group commits (fsyncs) per second and
entries per commit, and the reactor thread's CPU time per append.

Two ways of writing are compared: `pool` (what WriteAheadLog does: the pool thread writes a
whole batch with one pwrite, then fsyncs) and `reactor` (each record pwritten on the reactor
thread as it is appended, only the fsync in the pool).

    python bench/wal_bench.py                       # in a fresh directory under /tmp
    python bench/wal_bench.py --dir /var/lib/waypost-bench --seconds 5 --appenders 1,8,64
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor  # noqa: E402
from twisted.python.threadpool import ThreadPool  # noqa: E402

from agent.raft.disk import O_CLOEXEC  # noqa: E402
from agent.raft.records import encode_header  # noqa: E402
from agent.raft.wal import Entry, WriteAheadLog  # noqa: E402


class ReactorWritesLog(WriteAheadLog):
    """For comparison only: each record is pwritten on the reactor thread when appended;
    the batch left for the pool is only the fsync (an empty write marks the file)."""

    def _queue_entry(self, entry: Entry) -> None:
        super()._queue_entry(entry)
        ops = self._queue.ops
        for k, op in enumerate(ops):
            if op[0] == "create":
                seg = op[1]
                seg.fd = os.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o644)
                os.pwrite(seg.fd, encode_header(seg.first_index), 0)
                ops[k] = ["write", seg, 0, bytearray()]
            elif op[0] == "write" and op[3]:
                os.pwrite(op[1].fd, op[3], op[2])
                ops[k] = ["write", op[1], op[2] + len(op[3]), bytearray()]


@defer.inlineCallbacks
def one_run(kind: type, directory: Path, pool: ThreadPool, appenders: int, seconds: float,
            size: int):
    wal = yield kind.open(reactor, pool, directory)
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    payload = b"x" * size
    finished = defer.Deferred()
    running = [appenders]

    def append_next(_=None) -> None:
        if time.perf_counter() >= stop_at:
            running[0] -= 1
            if running[0] == 0:
                finished.callback(None)
            return
        started = time.perf_counter()
        d = wal.append([Entry(wal.last_index + 1, 1, 0, payload)])
        d.addCallback(lambda _: latencies.append(time.perf_counter() - started))
        d.addCallback(append_next)

    cpu0, wall0, batches0 = time.thread_time(), time.perf_counter(), wal.batches
    for _ in range(appenders):
        append_next()
    yield finished
    wall = time.perf_counter() - wall0
    cpu = time.thread_time() - cpu0
    batches = wal.batches - batches0
    yield wal.close()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "appends/s": len(latencies) / wall,
        "p50 ms": q[49] * 1000,
        "p99 ms": q[98] * 1000,
        "fsyncs/s": batches / wall,
        "entries/fsync": len(latencies) / max(batches, 1),
        "reactor CPU us/append": cpu / len(latencies) * 1e6,
    }


@defer.inlineCallbacks
def main(args) -> None:
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="wal-bench-",
                                                                 dir="/tmp"))
    pool = ThreadPool(minthreads=1, maxthreads=1, name="wal-bench")
    pool.start()
    rows = []
    try:
        for appenders in args.appenders:
            for name, kind in (("pool", WriteAheadLog), ("reactor", ReactorWritesLog)):
                directory = base / f"{name}-{appenders}"
                shutil.rmtree(directory, ignore_errors=True)
                result = yield one_run(kind, directory, pool, appenders, args.seconds,
                                       args.size)
                shutil.rmtree(directory, ignore_errors=True)
                rows.append((name, appenders, result))
    finally:
        pool.stop()
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
        reactor.stop()
    columns = list(rows[0][2])
    print(f"\n{args.size}-byte entries, fsync on, {args.seconds:g} s per run, in {base}")
    print(f"{'writes on':<10}{'appenders':>10}" + "".join(f"{c:>23}" for c in columns))
    for name, appenders, result in rows:
        print(f"{name:<10}{appenders:>10}" + "".join(f"{result[c]:>23.2f}" for c in columns))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="where to put the logs (default: a temp dir in /tmp)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=200, help="entry data bytes")
    parser.add_argument("--appenders", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 64], help="comma-separated concurrency levels")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse()
    reactor.callWhenRunning(lambda: main(args).addErrback(
        lambda f: (f.printTraceback(), reactor.stop())))
    reactor.run()
