"""The wheel must carry every package and the Alembic scripts (`pip install .` then `desksync init`)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_etl_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "etl").rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject.toml: {sorted(found - listed)}"
    assert "desksync_migrations" in listed and (ROOT / "migrations" / "env.py").is_file()


def test_building_the_package_warns_of_nothing(tmp_path):
    """The license as an SPDX string and every package listed: setuptools printed 93 lines of
    deprecation warnings (a license table, migrations' versions folder not listed) before."""
    import subprocess
    import sys

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    # pip's own notes about this machine's package sources are not the package's
    ours = [line for line in (built.stdout + built.stderr).splitlines()
            if ("warn" in line.lower() or "deprecat" in line.lower()) and "Location 'file://" not in line]
    assert ours == [], "\n".join(ours)
    assert list(tmp_path.glob("desksync-*.whl"))
