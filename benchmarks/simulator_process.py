"""What the benchmarks share: a `desksync simulate` server in its own process (one core serves, one
syncs), and the machine reference printed beside their figures."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(*options: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `desksync simulate OPTIONS` on a free port; returns the process and its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "etl.cli", "simulate", "--port", str(port), *options],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/_sim/stats", timeout=1)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("simulator did not start")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as children:
                todo.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    return found


def tree_pss_mb(pid: int) -> float:
    """The proportional set size of `pid` and its descendants, in MB: pages two processes share
    (a forked writer's imports) count once in the sum, not once in each."""
    total_kb = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/smaps_rollup") as rollup:
                total_kb += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return total_kb / 1024


def run_sampled(command: list[str], every: float = 0.1) -> tuple[str, float]:
    """Run `command` to its end; its stdout, and the peak of its process tree's summed PSS
    (sampled every `every` seconds, from outside, so the measured processes do no extra work)."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_pss_mb(proc.pid))
        time.sleep(every)
    out, err = proc.communicate()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, command, out, err)
    return out, peak


def init_mirror(url: str) -> None:
    """Create the mirror's schema in this process, as `desksync init` does in its own: a measured
    run then imports what `desksync sync` imports (migrating imports Alembic, which a sync does not)."""
    from etl.config import parse_config
    from etl.core.run import jobs

    jobs.init(parse_config({"mirror": {"url": url}, "connections": {}}))


def machine_reference() -> str:
    """The CPU time of a fixed pure-Python loop, printed beside a benchmark's figures.

    This machine's speed drifts: the same backfill has taken from 4 to 10 s of CPU on different
    hours. The loop's time tells a reader which phase a figure was measured in (lower is faster).
    """
    started = time.process_time()
    sum(range(10**8))
    return f"machine reference: {time.process_time() - started:.2f} s of CPU for sum(range(10**8))"
