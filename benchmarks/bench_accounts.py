"""Many accounts at once: one scheduler keeps N EddyDesk and a few ServiceGo accounts fresh.

    python benchmarks/bench_accounts.py                          # 50 EddyDesk + 3 ServiceGo, 5 minutes
    python benchmarks/bench_accounts.py --accounts 10            # the same with 10
    python benchmarks/bench_accounts.py --accounts 10,50         # both, one after the other
    python benchmarks/bench_accounts.py --seconds 120 --latency 0.4 --mirror postgresql://...
    python benchmarks/bench_accounts.py --mirror postgresql://... --workers 1,2
                                    # the jobs on 1, then 2 Celery workers (a real redis-server)

Every EddyDesk account is served at the documented 300 requests a minute (60 for its knowledge
base) and every ServiceGo account at 60 a minute, each answer 400 ms late, by the multi-account
simulators (etl.core.simulators.accounts) in one process of their own. Each account has its own data:
an EddyDesk backfill of about 750 requests (2.5 minutes of its budget), a ServiceGo one of about
150 (2.5 minutes), then a pull every minute.
`desksync schedule` runs every account's pull job for the fixed real time, then is stopped.
With `--workers`, the scheduler sends the jobs to that many `desksync worker` processes (one
thread per account between them) through a redis-server of the benchmark's own.

Printed per account: the share of its budget its backfill used (requests the simulator admitted in
the budget's minutes wholly inside the backfill, over what those minutes allow), rejections, and
the largest freshness lag once backfilled (how old the newest finished pull's start was, at
worst); then the total peak memory of every desksync process together (summed PSS, sampled from
outside every second) and the CPU they used.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulator_process import ROOT, free_port, machine_reference, process_tree, tree_pss_mb  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.redis_server import redis_server  # noqa: E402

EDDYDESK_PER_MINUTE = 300
SERVICEGO_PER_MINUTE = 60
CADENCE_SECONDS = 60
MAX_LAG_MINUTES = 2  # a pull a minute, plus a run's own length


def eddydesk_email(n: int) -> str:
    return f"admin{n}@example.com"


def servicego_email(n: int) -> str:
    return f"sg{n}@udesk.cn"


def servicego_token(n: int) -> str:
    return f"{n:02d}1b368d7f5f597867f525971f28ff7"


def serve(accounts: int, servicego: int, latency: float, eddydesk_port: int, servicego_port: int) -> None:
    """The simulators (runs in its own process until killed)."""
    from etl.connectors.eddydesk.simulator.accounts import AccountsServer
    from etl.connectors.eddydesk.simulator.data import Sizes
    from etl.connectors.eddydesk.simulator.limits import Limits
    from etl.connectors.eddydesk.simulator.store import HelpdeskState
    from etl.connectors.udesk.servicego.simulator.server import ServiceGoAccountsServer
    from etl.connectors.udesk.servicego.simulator.store import ServiceGoState
    from etl.connectors.udesk.servicego.simulator.store import Sizes as ServiceGoSizes

    states = [HelpdeskState(Sizes(tickets=300, users=100, organizations=10, kb_categories=2, kb_articles=10), seed=n,
                            admin_email=eddydesk_email(n), admin_api_key=f"key-{n}") for n in range(accounts)]
    limits = Limits(per_minute=EDDYDESK_PER_MINUTE, knowledge_base_per_minute=60)
    AccountsServer(states, limits, latency, port=eddydesk_port).start()
    udesk = [ServiceGoState(ServiceGoSizes(customers=2_500, contacts=6_000, cases=6_000), seed=n,
                            email=servicego_email(n), api_token=servicego_token(n)) for n in range(servicego)]
    ServiceGoAccountsServer(udesk, latency, per_minute=SERVICEGO_PER_MINUTE, port=servicego_port).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def write_config(path: Path, mirror_url: str, accounts: int, servicego: int, eddydesk: str, udesk: str,
                 broker: str | None = None) -> dict[str, str]:
    """The config file of the scheduler; returns the environment with every account's key."""
    import tomli_w

    env = dict(os.environ)
    connections: dict[str, Any] = {}
    jobs: dict[str, Any] = {}
    job = {"every_seconds": CADENCE_SECONDS, "max_lag_minutes": MAX_LAG_MINUTES}
    for n in range(accounts):
        env[f"BENCH_KEY_{n}"] = f"key-{n}"
        connections[f"acct{n}"] = {"system": "eddydesk", "base_url": f"{eddydesk}/api/v2", "email": eddydesk_email(n),
                                   "api_key_env": f"BENCH_KEY_{n}", "timezone": "Europe/Riga"}
        jobs[f"pull_acct{n}"] = {"connection": f"acct{n}", **job}
    for n in range(servicego):
        env[f"BENCH_SG_TOKEN_{n}"] = servicego_token(n)
        connections[f"sg{n}"] = {"system": "servicego", "base_url": f"{udesk}/api", "email": servicego_email(n),
                                 "api_token_env": f"BENCH_SG_TOKEN_{n}",
                                 "objects": [{"name": "customer"}, {"name": "contact"}, {"name": "case"}]}
        jobs[f"pull_sg{n}"] = {"connection": f"sg{n}", **job}
    document: dict[str, Any] = {"mirror": {"url": mirror_url}, "log": {"level": "warning", "json": True},
                                "connections": connections, "jobs": jobs}
    if broker is not None:
        env["BENCH_BROKER_URL"] = broker
        document["executor"] = {"kind": "celery", "broker_url_env": "BENCH_BROKER_URL", "busy_retry_seconds": 5}
    path.write_text(tomli_w.dumps(document))
    return env


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    connection: str
    status: str
    started: float  # epoch seconds
    finished: float | None
    requests: int


def runs_of(mirror_url: str) -> list[Run]:
    import sqlalchemy as sa

    from etl.core.mirror.db import open_engine

    def epoch(value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()

    engine = open_engine(mirror_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT connection, status, started_at, finished_at, requests FROM sync_runs "
                                    "WHERE kind = 'sync' ORDER BY id")).all()
    engine.dispose()
    return [Run(r[0], r[1], epoch(r[2]) or 0.0, epoch(r[3]), r[4] or 0) for r in rows]


def budget_share(admitted: dict[str, int], start: float, end: float, per_minute: int) -> float | None:
    """Requests admitted in the budget's minutes that lie wholly between `start` and `end`, over
    what those minutes allow (the simulators' budgets are calendar minutes, as a fixed-window
    limit's are: a backfill's partial first and last minutes say nothing of its pace); None when
    no minute lies wholly inside."""
    first, last = math.ceil(start / 60), math.floor(end / 60)  # minute numbers
    if last <= first:
        return None
    used = sum(count for second, count in admitted.items() if first * 60 <= int(second) < last * 60)
    return used / (per_minute * (last - first))


def worst_lag(runs: list[Run], until: float) -> float | None:
    """The largest age, in minutes, of the newest finished pull's start (as `status --check` reads
    it), from the end of the first pull after the backfill to `until`; None before that pull ends."""
    done = sorted((r for r in runs if r.status == "ok" and r.finished is not None), key=lambda r: r.finished or 0.0)
    if len(done) < 2:
        return None
    worst, newest = 0.0, done[1].started
    for run in done[2:]:
        worst = max(worst, (run.finished or 0.0) - newest)
        newest = max(newest, run.started)
    return max(worst, until - newest) / 60


def account_stats(eddydesk: str, udesk: str, accounts: int, servicego: int) -> dict[str, dict[str, Any]]:
    stats: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=30) as client:
        for n in range(accounts):
            auth = base64.b64encode(f"{eddydesk_email(n)}:key-{n}".encode()).decode()
            body = client.get(f"{eddydesk}/_sim/stats", headers={"Authorization": f"Basic {auth}"}).json()
            stats[f"acct{n}"] = {"admitted": body["admitted_per_second"].get("main", {}),
                                 "rejections": body["rate_limit_rejections"], "per_minute": EDDYDESK_PER_MINUTE}
        for n in range(servicego):
            body = client.get(f"{udesk}/_sim/stats", params={"email": servicego_email(n)}).json()
            stats[f"sg{n}"] = {"admitted": body.get("admitted_per_second", {}), "rejections": body.get("rate_limited", 0),
                               "per_minute": SERVICEGO_PER_MINUTE}
    return stats


def measure(accounts: int, servicego: int, seconds: float, latency: float, mirror: str, workers: int = 0) -> dict[str, Any]:
    eddydesk_port, servicego_port = free_port(), free_port()
    eddydesk, udesk = f"http://127.0.0.1:{eddydesk_port}", f"http://127.0.0.1:{servicego_port}"
    simulators = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--accounts", str(accounts), "--servicego", str(servicego),
         "--latency", str(latency), "--ports", f"{eddydesk_port},{servicego_port}"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert simulators.stdout is not None
    procs: list[subprocess.Popen[bytes]] = []  # the scheduler, then the workers
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        try:
            if simulators.stdout.readline().strip() != "ready":
                raise RuntimeError("the simulators did not start")
            mirror_url = f"sqlite:///{tmp}/mirror.sqlite" if mirror == "sqlite" else fresh_postgres_database(mirror)
            broker = stack.enter_context(redis_server(Path(tmp) / "redis")) if workers else None
            config = Path(tmp) / "desksync.toml"
            env = write_config(config, mirror_url, accounts, servicego, eddydesk, udesk, broker)
            init = subprocess.run([sys.executable, "-m", "etl.cli", "--config", str(config), "init"], cwd=ROOT,
                                  env=env, capture_output=True, text=True)
            if init.returncode:
                raise RuntimeError(f"desksync init failed: {init.stderr}")
            threads = math.ceil((accounts + servicego) / workers) if workers else 0
            commands = [("scheduler", ["schedule"])] + [
                (f"worker{n}", ["worker", "--concurrency", str(threads)]) for n in range(workers)]
            for name, command in commands:
                with (Path(tmp) / f"{name}.log").open("wb") as sink:
                    procs.append(subprocess.Popen([sys.executable, "-m", "etl.cli", "--config", str(config), *command],
                                                  cwd=ROOT, env=env, stdout=sink, stderr=sink))
            started = time.time()
            peak, cpu = 0.0, 0.0
            while time.time() - started < seconds and all(p.poll() is None for p in procs):
                peak = max(peak, sum(tree_pss_mb(p.pid) for p in procs))
                cpu = max(cpu, cpu_seconds([pid for p in procs for pid in process_tree(p.pid)]))
                time.sleep(1.0)
            ended = time.time()
            cpu = max(cpu, cpu_seconds([pid for p in procs for pid in process_tree(p.pid)]))
            simulator_cpu = cpu_seconds([simulators.pid])
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for (name, _), proc in zip(commands, procs, strict=True):
                if proc.wait(timeout=120) != 0:
                    raise RuntimeError(f"{name} failed:\n{(Path(tmp) / f'{name}.log').read_text()[-3000:]}")
            stats = account_stats(eddydesk, udesk, accounts, servicego)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            simulators.kill()
        runs = runs_of(mirror_url)
        errors = [line for name, _ in commands for line in (Path(tmp) / f"{name}.log").read_text().splitlines()
                  if '"level": "error"' in line]
    result = summarise(stats, runs, started, ended, peak, cpu, errors)
    result["simulator_cpu_s"] = simulator_cpu  # the simulators' share of the two cores
    return result


def fresh_postgres_database(url: str) -> str:
    import sqlalchemy as sa

    name = f"bench_accounts_{os.getpid()}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return str(sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False))


def summarise(stats: dict[str, dict[str, Any]], runs: list[Run], started: float, ended: float, peak: float,
              cpu: float, errors: list[str]) -> dict[str, Any]:
    per_account: dict[str, dict[str, Any]] = {}
    for name, account in stats.items():
        mine = [r for r in runs if r.connection == name]
        first = next((r for r in mine if r.status == "ok"), None)
        backfill_end = first.finished if first and first.finished else ended
        backfill_start = mine[0].started if mine else started
        overlaps = sum(1 for a, b in zip(mine, mine[1:], strict=False) if a.finished is None or b.started < a.finished)
        per_account[name] = {
            "backfilled": first is not None,
            "backfill_minutes": (backfill_end - backfill_start) / 60,
            "budget_share": budget_share(account["admitted"], backfill_start, backfill_end, account["per_minute"]),
            "rejections": account["rejections"],
            "incremental_runs": max(0, sum(r.status == "ok" for r in mine) - 1),
            "worst_lag_minutes": worst_lag(mine, ended),
            "failed_runs": sum(r.status not in ("ok", "interrupted") for r in mine),
            "overlaps": overlaps,
        }
    return {"accounts": per_account, "peak_mb": peak, "cpu_s": cpu, "seconds": ended - started, "errors": errors}


def report(label: str, result: dict[str, Any], verbose: bool) -> None:
    accounts = result["accounts"]
    if verbose:
        for name, a in accounts.items():
            lag = "-" if a["worst_lag_minutes"] is None else f"{a['worst_lag_minutes']:.2f} min"
            share = "-" if a["budget_share"] is None else f"{a['budget_share']:.1%}"
            print(f"  {name:>7}: backfill {a['backfill_minutes']:.2f} min at {share} of its budget, "
                  f"{a['rejections']} rejections, {a['incremental_runs']} pulls after it, worst lag {lag}, "
                  f"{a['failed_runs']} failed runs, {a['overlaps']} overlaps")
    for system, prefix in (("EddyDesk", "acct"), ("ServiceGo", "sg")):
        group = [a for name, a in accounts.items() if name.startswith(prefix)]
        if not group:
            continue
        shares = [a["budget_share"] for a in group if a["budget_share"] is not None]
        lags = [a["worst_lag_minutes"] for a in group if a["worst_lag_minutes"] is not None]
        share = (f"min {min(shares):.1%}, median {statistics.median(shares):.1%} ({len(shares)} accounts with a "
                 f"whole minute of backfill)") if shares else "- (no account's backfill spanned a whole minute)"
        print(f"{label} {system} ({len(group)} accounts): budget used during backfill {share}; backfilled {sum(a['backfilled'] for a in group)}/{len(group)} "
              f"in {max(a['backfill_minutes'] for a in group):.2f} min at most; "
              f"{sum(a['rejections'] for a in group)} rejections; worst freshness lag "
              f"{max(lags) if lags else float('nan'):.2f} min (max_lag_minutes {MAX_LAG_MINUTES}); "
              f"{sum(a['failed_runs'] for a in group)} failed runs, {sum(a['overlaps'] for a in group)} overlaps")
    print(f"{label} total peak memory of the desksync processes {result['peak_mb']:.0f} MB (summed PSS); "
          f"CPU {result['cpu_s']:.0f} s in {result['seconds']:.0f} s = {result['cpu_s'] / result['seconds']:.0%} "
          f"of one core (the simulators: {result['simulator_cpu_s'] / result['seconds']:.0%}); "
          f"{len(result['errors'])} error lines logged", flush=True)
    for line in result["errors"][:5]:
        print("  ", line[:300])


def compare_workers(accounts: int, args: argparse.Namespace, counts: list[int]) -> None:
    """The same accounts on each number of Celery workers in turn, then each side by side."""
    results = []
    for workers in counts:
        result = measure(accounts, args.servicego, args.seconds, args.latency, args.mirror, workers)
        report(f"{accounts} + {args.servicego} accounts on {workers} worker(s), {args.seconds:.0f} s:", result,
               args.verbose)
        results.append(result)
    for workers, result in zip(counts, results, strict=True):
        shares = [a["budget_share"] for a in result["accounts"].values() if a["budget_share"] is not None]
        lags = [a["worst_lag_minutes"] for a in result["accounts"].values() if a["worst_lag_minutes"] is not None]
        print(f"{workers} worker(s): budget used during backfill median "
              f"{statistics.median(shares) if shares else float('nan'):.1%} (min {min(shares, default=float('nan')):.1%}), "
              f"worst lag {max(lags, default=float('nan')):.2f} min, "
              f"{sum(a['rejections'] for a in result['accounts'].values())} rejections, "
              f"{sum(a['overlaps'] for a in result['accounts'].values())} overlaps, peak {result['peak_mb']:.0f} MB "
              f"(scheduler and workers, summed PSS), CPU {result['cpu_s']:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", default="50", help="EddyDesk accounts; several runs: 10,50")
    parser.add_argument("--servicego", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--latency", type=float, default=0.4)
    parser.add_argument("--mirror", default="sqlite", help="sqlite, or a PostgreSQL server URL")
    parser.add_argument("--workers", help="run the jobs on Celery workers: 1,2 measures one, then two "
                                          "(needs --mirror postgresql://...)")
    parser.add_argument("--verbose", action="store_true", help="a line per account")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        eddydesk_port, servicego_port = (int(p) for p in args.ports.split(","))
        serve(int(args.accounts), args.servicego, args.latency, eddydesk_port, servicego_port)
        return
    print(machine_reference(), "(before)", flush=True)
    if args.workers:
        compare_workers(int(args.accounts), args, [int(n) for n in args.workers.split(",")])
        print(machine_reference(), "(after)")
        return
    results = []
    for accounts in (int(n) for n in args.accounts.split(",")):
        result = measure(accounts, args.servicego, args.seconds, args.latency, args.mirror)
        report(f"{accounts} + {args.servicego} accounts, {args.seconds:.0f} s:", result, args.verbose)
        results.append((accounts, result))
    if len(results) > 1:
        (few, low), (many, high) = results[0], results[-1]
        print(f"memory per account added from {few} to {many}: "
              f"{(high['peak_mb'] - low['peak_mb']) / (many - few):.1f} MB")
    print(machine_reference(), "(after)")


if __name__ == "__main__":
    main()
