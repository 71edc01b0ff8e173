"""Unattended replication on an APScheduler cadence: `python scheduler.py [--config FILE]`.

Runs the jobs of the config's [jobs] table (or, without one, a pull of every connection every
`--every` seconds) until SIGINT or SIGTERM; `desksync schedule` is the same. The rules (no
overlaps, shared account budgets, backoff, locks across processes) live in etl/core/run/schedule.py.
"""

from __future__ import annotations

import argparse
import sys

from etl.config import load_config
from etl.core import log
from etl.core.errors import DesksyncError
from etl.core.run.schedule import serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config")
    parser.add_argument("--every", type=float, default=300.0, help="seconds between pulls when no jobs are configured")
    args = parser.parse_args()
    try:
        config = load_config(args.config)
        log.configure(config.log.level, config.log.json_output)
        serve(config, args.every)
    except DesksyncError as exc:
        print(f"desksync scheduler: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
