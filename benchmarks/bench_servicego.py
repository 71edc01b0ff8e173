"""ServiceGo extraction benchmark: records/second, requests and peak memory.

    python benchmarks/bench_servicego.py                  # 100,000 records
    python benchmarks/bench_servicego.py --records 20000   # a smaller run (memory is flat in size)
    python benchmarks/bench_servicego.py --backfills 5     # the median of five backfills (default three)

1. backfill of customer, contact and case (10/30/60 % of the records), no latency, no limit,
   three times into fresh files: the median is reported beside each run's figure, with its CPU;
2. 1 % of the records change remotely (updates, creates and deletes);
3. the incremental sync: its requests, compared with the backfill's;
4. 10,000 local edits pushed back (PUT /v1/data, one request per record).
The simulator runs in its own process; each sync runs in a fresh child process, whose peak memory
with its writer's is sampled from outside (summed PSS: pages the two share count once).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulator_process import init_mirror, machine_reference, run_sampled, start_simulator  # noqa: E402

TOKEN = "221b368d7f5f597867f525971f28ff75"


def child(args: argparse.Namespace) -> None:
    """One measured sync (runs in its own process)."""
    os.environ["BENCH_UDESK_TOKEN"] = TOKEN
    import sqlalchemy as sa

    from etl.config import parse_config
    from etl.core import log
    from etl.core.mirror.db import open_engine
    from etl.core.run import jobs

    log.configure("warning", json=True)
    url = f"sqlite:///{args.db}"
    config = parse_config({
        "mirror": {"url": url},
        "connections": {"bench": {
            "system": "servicego", "base_url": args.base + "/api", "email": "admin@udesk.cn",
            "api_token_env": "BENCH_UDESK_TOKEN", "rate_limit": {"per_minute": 10**9},
            "objects": [{"name": "customer"}, {"name": "contact"}, {"name": "case", "push": {}}],
        }},
    })
    if args.push:
        with open_engine(url).begin() as conn:  # 10,000 local edits
            conn.execute(sa.text("UPDATE servicego_case SET remark = 'checked ' || id "
                                 "WHERE id IN (SELECT id FROM servicego_case WHERE NOT is_deleted ORDER BY id LIMIT :n)"),
                         {"n": args.push})
        started = time.perf_counter()
        pushed = jobs.push(config, "bench")
        elapsed = time.perf_counter() - started
        outcome = pushed.tables["case"]
        print(json.dumps({"seconds": elapsed, "ok": outcome.ok, "failed": outcome.failed, "requests": pushed.requests,
                          "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    from etl.core.memory import cap_malloc_arenas
    from etl.core.pull.context import fork_writer_if_it_pays

    cap_malloc_arenas()  # as the CLI does, and as it does, the writer is forked before the mirror opens
    forked = fork_writer_if_it_pays(config.connection("bench"), config.mirror.writer_process_min_pages)
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    summary = jobs.sync(config, "bench", forked_writer=forked)
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds()
    with open_engine(url).connect() as conn:
        rows = sum(conn.execute(sa.text(f"SELECT count(*) FROM servicego_{o} WHERE NOT is_deleted")).scalar_one()
                   for o in ("customer", "contact", "case"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    writer_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the writer process, if any
    print(json.dumps({"status": summary.status, "seconds": elapsed, "records": rows, "requests": summary.requests,
                      "inserted": summary.inserted, "updated": summary.updated, "deleted": summary.deleted,
                      "peak_mb": peak_mb, "writer_peak_mb": writer_peak_mb,
                      "main_cpu": cpu[0] - cpu_before[0], "writer_cpu": cpu[1] - cpu_before[1]}))


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its ended children (the writer)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def measure(base: str, db: str, push: int = 0) -> dict[str, float]:
    init_mirror(f"sqlite:///{db}")  # a no-op after the first run into this file
    out, peak = run_sampled([sys.executable, __file__, "--child", "--base", base, "--db", db, "--push", str(push)])
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["run_peak_mb"] = peak  # every process of the run together (PSS: shared pages count once)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--base")
    parser.add_argument("--db")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--push", type=int, default=0, help="(child) push this many local edits instead of syncing")
    parser.add_argument("--backfills", type=int, default=3,
                        help="backfills to run (each into a fresh file): their median is reported, the machine's "
                             "speed swings from run to run")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(machine_reference(), "(before)", flush=True)
    proc, base = start_simulator("--system", "servicego", "--records", str(args.records))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            for n in range(max(1, args.backfills)):
                db = f"{tmp}/bench{n}.sqlite"
                runs.append(measure(base, db))  # the later steps go on from the last one's mirror
            backfill = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
            changed = args.records // 100
            httpx.post(f"{base}/_sim/changes", json={"seed": 9, "updates": changed, "creates": 0, "deletes": 0},
                       timeout=120)
            incremental = measure(base, db)
            # deletions cost more: each is found by counting createTime ranges (etl.connectors.udesk.servicego.deletes)
            httpx.post(f"{base}/_sim/changes", json={"seed": 10, "updates": 0, "creates": changed // 10,
                                                     "deletes": changed // 10}, timeout=120)
            with_deletes = measure(base, db)
            edits = min(10_000, args.records // 2)
            pushed = measure(base, db, push=edits)
    finally:
        proc.kill()
    rate = backfill["records"] / backfill["seconds"]
    rates = ", ".join(f"{r['records'] / r['seconds']:,.0f}" for r in runs)
    print(f"ServiceGo backfill: {backfill['records']:,} records in {backfill['seconds']:.1f} s = {rate:,.0f} records/s "
          f"(median of {len(runs)}: {rates}), {backfill['requests']:,} requests, CPU {backfill['main_cpu']:.1f} s + "
          f"writer {backfill['writer_cpu']:.1f} s, run peak {backfill['run_peak_mb']:.0f} MB")
    share = incremental["requests"] / backfill["requests"]
    print(f"incremental after {changed:,} records changed (1 %): {incremental['requests']:,} requests "
          f"({share:.1%} of the backfill's), {incremental['updated']} updated in {incremental['seconds']:.1f} s, "
          f"run peak {incremental['run_peak_mb']:.0f} MB")
    print(f"incremental after {changed // 10} creates and {changed // 10} deletes: {with_deletes['requests']:,} requests "
          f"({with_deletes['requests'] / backfill['requests']:.1%}), {with_deletes['inserted']} inserted, "
          f"{with_deletes['deleted']} deleted in {with_deletes['seconds']:.1f} s")
    print(f"push of {edits:,} locally updated records: {pushed['ok']:,} sent in {pushed['seconds']:.1f} s = "
          f"{pushed['ok'] / pushed['seconds']:,.0f} records/s, {pushed['requests']:,} requests, "
          f"run peak {pushed['run_peak_mb']:.0f} MB")
    print(machine_reference(), "(after)")


if __name__ == "__main__":
    main()
