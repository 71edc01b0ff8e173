"""Pipeline benchmark: the example's helpdesk_to_servicego (EddyDesk organizations and users into
ServiceGo customers and contacts), records/second, requests and peak memory.

    python benchmarks/bench_pipeline.py                 # 10,000 users, 1,000 organizations
    python benchmarks/bench_pipeline.py --users 2000

1. the first run: every organization and user created (one upsert lookup and one POST each);
2. a second run with no change: the staging pass alone (0 requests);
3. 1 % of the users changed in the mirror (as a pull brings them): exactly those sent.
Both simulators run in their own processes, without latency or rate limit; the pipeline runs in
this one (its peak memory, ru_maxrss, includes the pulls that fill the mirror first).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulator_process import ROOT, machine_reference, start_simulator  # noqa: E402

TOKEN = "221b368d7f5f597867f525971f28ff75"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    print(machine_reference(), "(before)", flush=True)
    organizations = max(1, args.users // 10)
    helpdesk_proc, helpdesk = start_simulator("--tickets", "10", "--users", str(args.users), "--organizations",
                                              str(organizations), "--articles", "5", "--rate-limit", "1000000000")
    servicego_proc, servicego = start_simulator("--system", "servicego", "--records", "100")
    os.environ.update(BENCH_API_KEY="sim-api-key", BENCH_UDESK_TOKEN=TOKEN)
    import sqlalchemy as sa

    from etl.config import parse_config
    from etl.core import log
    from etl.core.mirror.db import open_engine
    from etl.core.run import jobs

    log.configure("warning", json=True)
    example = tomllib.loads((ROOT / "config" / "desksync.example.toml").read_text())
    pushes = {o["name"]: o["push"] for o in example["connections"]["servicego"]["objects"] if "push" in o}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.sqlite"
            config = parse_config({
                "mirror": {"url": url},
                "connections": {
                    "helpdesk": {"system": "eddydesk", "base_url": helpdesk + "/api/v2", "email": "admin@example.com",
                                 "api_key_env": "BENCH_API_KEY", "timezone": "Europe/Riga",
                                 "rate_limit": {"per_minute": 10**9, "knowledge_base_per_minute": 10**9}},
                    "servicego": {"system": "servicego", "base_url": servicego + "/api", "email": "admin@udesk.cn",
                                  "api_token_env": "BENCH_UDESK_TOKEN", "rate_limit": {"per_minute": 10**9},
                                  "objects": [{"name": n, "push": pushes[n]} for n in ("customer", "contact")]},
                },
                "pipelines": {"helpdesk_to_servicego": example["pipelines"]["helpdesk_to_servicego"]},
            })
            jobs.init(config)
            jobs.sync(config, "helpdesk", ("users", "organizations"))
            jobs.sync(config, "servicego")
            records = args.users + organizations
            for label in ("first run (creates)", "second run (no change)", "1 % of the users changed"):
                if label.startswith("1 %"):
                    with open_engine(url).begin() as conn:
                        conn.execute(sa.text("UPDATE eddydesk_users SET phone = '+3712' || id WHERE id % 100 = 0"))
                started = time.perf_counter()
                summary = jobs.run_pipeline(config, "helpdesk_to_servicego")
                seconds = time.perf_counter() - started
                staged = sum(s.staged for s in summary.steps)
                sent = sum(s.push.ok for s in summary.steps if s.push is not None)
                print(f"{label}: {records:,} source records in {seconds:.2f} s = {records / seconds:,.0f} records/s read; "
                      f"{staged:,} staged, {sent:,} sent, {summary.requests:,} requests, {summary.held} held")
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"peak memory of this process (pulls included): {peak:,.0f} MB")
            print(machine_reference(), "(after)")
    finally:
        helpdesk_proc.kill()
        servicego_proc.kill()


if __name__ == "__main__":
    main()
