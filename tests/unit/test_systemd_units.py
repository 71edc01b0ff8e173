"""The systemd units shipped in config/ pass `systemd-analyze verify` without a word (the README's
unit had a comment after a value: "Failed to parse time value, ignoring: 120   # time for …")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("unit", ["desksync.service", "desksync-check.service", "desksync-worker@.service"])
def test_the_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing (.ci/run installs systemd)"
    # verify checks that the commands exist: the unit's install path is this checkout here
    text = (ROOT / "config" / unit).read_text().replace("/opt/desksync", str(ROOT))
    assert (ROOT / ".venv" / "bin" / "desksync").exists()
    copy = tmp_path / unit.replace("@.", "@1.")  # a template is verified as one of its instances
    copy.write_text(text)
    checked = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stdout + checked.stderr


def test_no_unit_has_a_comment_after_a_value() -> None:
    for unit in (ROOT / "config").glob("*.service"):
        for number, line in enumerate(unit.read_text().splitlines(), start=1):
            if "=" in line and not line.lstrip().startswith("#"):
                assert " #" not in line.split("=", 1)[1], f"{unit.name}:{number}: systemd reads this comment as the value"
