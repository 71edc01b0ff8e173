"""Unattended replication on an APScheduler cadence.

A minimal cadence for now: every connection is synced every `--every` seconds, never two runs
of one connection at once. The scheduling issue (run history, cron jobs, locks across
processes, health) builds the full scheduler here.
"""

from __future__ import annotations

import argparse

from apscheduler.schedulers.blocking import BlockingScheduler

from etl import jobs, log
from etl.config import load_config
from etl.errors import DesksyncError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config")
    parser.add_argument("--every", type=float, default=300.0, help="seconds between syncs of a connection")
    args = parser.parse_args()
    config = load_config(args.config)
    log.configure(config.log.level, config.log.json_output)
    logger = log.get_logger(component="scheduler")
    scheduler = BlockingScheduler()

    def run(name: str) -> None:
        try:
            summary = jobs.sync(config, name)
            logger.info("sync_finished", connection=name, status=summary.status, requests=summary.requests)
        except DesksyncError as exc:
            logger.error("sync_failed", connection=name, error=str(exc))

    for name in config.connections:
        scheduler.add_job(run, "interval", args=[name], seconds=args.every, id=f"sync:{name}",
                          max_instances=1, coalesce=True, misfire_grace_time=int(args.every))
    scheduler.start()


if __name__ == "__main__":
    main()
