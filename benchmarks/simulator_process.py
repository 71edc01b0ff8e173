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


def machine_reference() -> str:
    """The CPU time of a fixed pure-Python loop, printed beside a benchmark's figures.

    This machine's speed drifts: the same backfill has taken from 4 to 10 s of CPU on different
    hours. The loop's time tells a reader which phase a figure was measured in (lower is faster).
    """
    started = time.process_time()
    sum(range(10**8))
    return f"machine reference: {time.process_time() - started:.2f} s of CPU for sum(range(10**8))"
