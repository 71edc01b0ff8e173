"""EddyDesk extraction benchmark: prints records/second, requests/second and peak memory.

    python benchmarks/bench_eddydesk.py                 # both runs below
    python benchmarks/bench_eddydesk.py --only fast     # 100,000 tickets, no latency, no limit
    python benchmarks/bench_eddydesk.py --only budget   # 2 real minutes, 400 ms latency, 300/min
    python benchmarks/bench_eddydesk.py --only push     # 1,000 edited tickets pushed (no limit), then
                                                        # 200 at 300/min with 400 ms latency

The simulator runs in its own process (the machine has two cores: one serves, one syncs).
Each sync runs in a fresh child process (its schema made beforehand, as `desksync init` does),
forking its writer process (etl/core/pull/writer_process.py) as `desksync sync` does; the run's peak
memory is the summed PSS of both, sampled from outside, and "written" what both wrote to disk.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulator_process import init_mirror, machine_reference, run_sampled, start_simulator  # noqa: E402


def start_eddydesk(tickets: int, latency: float, rate_limit: int) -> tuple[subprocess.Popen[bytes], str]:
    return start_simulator("--tickets", str(tickets), "--users", "200", "--organizations", "20", "--articles", "20",
                           "--latency", str(latency), "--rate-limit", str(rate_limit))


def child(args: argparse.Namespace) -> None:
    """One measured sync (runs in its own process)."""
    os.environ["BENCH_API_KEY"] = "sim-api-key"
    from etl.config import parse_config
    from etl.core import log
    from etl.core.run import jobs

    log.configure("warning", json=True)
    url = f"sqlite:///{args.db}"
    config = parse_config({
        "mirror": {"url": url},
        "connections": {"bench": {
            "system": "eddydesk", "base_url": args.base + "/api/v2", "email": "admin@example.com",
            "api_key_env": "BENCH_API_KEY", "timezone": "Europe/Riga", "concurrency": args.concurrency,
            "rate_limit": {"per_minute": args.per_minute, "knowledge_base_per_minute": max(1, args.per_minute // 5)},
            "push": {"tickets": {}},
        }},
    })
    if args.push:
        push_tickets(config, url, args.push)
        return
    from etl.core.memory import cap_malloc_arenas
    from etl.core.pull.context import fork_writer_if_it_pays

    cap_malloc_arenas()  # as the CLI does
    # as `desksync sync` does: forked before the mirror opens, where fetching may outrun one process
    forked = fork_writer_if_it_pays(config.connection("bench"), config.mirror.writer_process_min_pages)
    stop = threading.Event()
    if args.seconds:
        threading.Timer(args.seconds, stop.set).start()
    started, cpu = time.perf_counter(), time.process_time()
    try:
        summary = jobs.sync(config, "bench", tuple(args.streams.split(",")), stop=stop, forked_writer=forked)
        status = summary.status
    except Exception as exc:  # the Stopped raised at the time limit ends the measured window
        if type(exc).__name__ != "Stopped":
            raise
        summary, status = None, "stopped at the time limit"
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    import sqlalchemy as sa

    from etl.core.mirror.db import open_engine

    with open_engine(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM eddydesk_tickets")).scalar_one()
        runs = conn.execute(sa.text("SELECT requests, rate_limit_wait_seconds FROM sync_runs ORDER BY id DESC")).first()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    writer = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"status": status, "seconds": elapsed, "tickets": rows,
                      "requests": summary.requests if summary else runs[0] if runs else None,
                      "peak_mb": peak_mb, "writer_peak_mb": writer.ru_maxrss / 1024,
                      "cpu_s": cpu, "writer_cpu_s": writer.ru_utime + writer.ru_stime,
                      # blocks of 512 bytes both processes wrote: the database, its write-ahead log
                      "written_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_oublock + writer.ru_oublock) / 2048}))


def push_tickets(config: Any, url: str, count: int) -> None:
    """Mirror the tickets, edit `count` of them locally, time the push (one PUT each)."""
    import sqlalchemy as sa

    from etl.core.mirror.db import open_engine
    from etl.core.run import jobs

    jobs.sync(config, "bench", ("tickets",))
    with open_engine(url).begin() as conn:
        conn.execute(sa.text("UPDATE eddydesk_tickets SET title = 'Checked ' || id, status_id = 'closed' "
                             "WHERE id IN (SELECT id FROM eddydesk_tickets ORDER BY id LIMIT :n)"), {"n": count})
    started = time.perf_counter()
    summary = jobs.push(config, "bench")
    elapsed = time.perf_counter() - started
    outcome = summary.tables["tickets"]
    print(json.dumps({"seconds": elapsed, "ok": outcome.ok, "failed": outcome.failed, "requests": summary.requests,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(base: str, streams: str, per_minute: int, seconds: float = 0, concurrency: int = 8,
            push: int = 0) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        init_mirror(f"sqlite:///{tmp}/bench.sqlite")
        out, peak = run_sampled(
            [sys.executable, __file__, "--child", "--base", base, "--db", f"{tmp}/bench.sqlite", "--streams", streams,
             "--per-minute", str(per_minute), "--seconds", str(seconds), "--concurrency", str(concurrency),
             "--push", str(push)])
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["run_peak_mb"] = peak  # every process of the run together (PSS: shared pages count once)
    return result


def fast(tickets: int) -> dict[str, float]:
    proc, base = start_eddydesk(tickets, 0.0, 0)
    try:
        result = measure(base, "tickets", 10**9)
    finally:
        proc.kill()
    result["tickets_per_s"] = result["tickets"] / result["seconds"]
    result["requests_per_s"] = result["requests"] / result["seconds"]
    return result


def budget(seconds: float) -> dict[str, float]:
    proc, base = start_eddydesk(100_000, 0.4, 300)
    try:
        # the run is stopped at the time limit; the simulator's own count is the truth
        httpx.post(f"{base}/_sim/reset-stats")
        result = measure(base, "tickets", 300, seconds=seconds)
        stats = httpx.get(f"{base}/_sim/stats").json()
    finally:
        proc.kill()
    served = stats["requests"]
    result["server_requests"] = served
    result["rejections"] = stats["rate_limit_rejections"]
    result["budget_share"] = served / (300 * result["seconds"] / 60)
    return result


def push(count: int, tickets: int, latency: float, rate_limit: int) -> dict[str, float]:
    proc, base = start_eddydesk(tickets, latency, rate_limit)
    try:
        result = measure(base, "tickets", rate_limit or 10**9, push=count)
        stats = httpx.get(f"{base}/_sim/stats").json()
    finally:
        proc.kill()
    result["rejections"] = stats["rate_limit_rejections"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--base")
    parser.add_argument("--db")
    parser.add_argument("--streams", default="tickets")
    parser.add_argument("--per-minute", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--only", choices=("fast", "budget", "push"))
    parser.add_argument("--push", type=int, default=0, help="(child) push this many edited tickets instead of syncing")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--budget-seconds", type=float, default=120)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(machine_reference(), "(before)", flush=True)
    if args.only in (None, "fast"):
        for n in (args.tickets // 4, args.tickets):
            r = fast(n)
            print(f"fast   {n:>7,} tickets into SQLite, no latency, no limit: {r['tickets_per_s']:>8,.0f} tickets/s  "
                  f"{r['requests_per_s']:>6,.0f} requests/s  {r['requests']:,} requests  "
                  f"run peak {r['run_peak_mb']:.0f} MB, {r['written_mb']:,.0f} MB written  ({r['seconds']:.1f} s)",
                  flush=True)
    if args.only in (None, "budget"):
        r = budget(args.budget_seconds)
        print(f"budget {args.budget_seconds:.0f} s, 400 ms latency, 300/min: {r['server_requests']} requests served "
              f"= {r['budget_share']:.1%} of the rate budget, {r['rejections']} rejections, "
              f"{r['tickets']:,} tickets mirrored, run peak {r['run_peak_mb']:.0f} MB",
              flush=True)
    if args.only in (None, "push"):
        for count, latency, limit in ((1_000, 0.0, 0), (200, 0.4, 300)):
            r = push(count, 5_000, latency, limit)
            where = "no latency, no limit" if not limit else f"{latency * 1000:.0f} ms latency, {limit}/min"
            print(f"push   {count:,} edited tickets, {where}: {r['ok']:,} sent in {r['seconds']:.1f} s = "
                  f"{r['ok'] / r['seconds']:,.0f} records/s, {r['requests']:,} requests, {r['rejections']} rejections, "
                  f"run peak {r['run_peak_mb']:.0f} MB", flush=True)
    print(machine_reference(), "(after)")


if __name__ == "__main__":
    main()
