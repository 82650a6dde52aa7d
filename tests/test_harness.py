"""The harness itself: the Docker backend skips cleanly without an engine, and the suite runs as an
ordinary (non-root) user through pytest-postgresql's own ``postgresql_proc``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ONE_TEST = "tests/test_ledger.py::test_transfer_happy_path_keeps_entries"


def nested_pytest(env: dict[str, str], user: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ONE_TEST]
    if user:
        command = ["runuser", "-u", user, "--", *command]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PGWALLET_TEST_", "PYTEST_"))}
    return subprocess.run(command, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=300,
                          check=False)


def _docker_engine_reachable() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.mark.skipif(_docker_engine_reachable(), reason="a Docker engine runs here: the backend would be used")
def test_docker_backend_skips_cleanly_without_an_engine() -> None:
    done = nested_pytest({"PGWALLET_TEST_BACKEND": "docker"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout and "no Docker engine is reachable" in done.stdout, done.stdout


def _postgres_user_can_read_the_checkout() -> bool:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return False
    probe = ["runuser", "-u", "postgres", "--", "test", "-r", str(ROOT / "tests" / "conftest.py"),
             "-a", "-x", sys.executable]
    return subprocess.run(probe, check=False).returncode == 0


@pytest.mark.skipif(not _postgres_user_can_read_the_checkout(),
                    reason="needs root, and a checkout the unprivileged postgres user can read")
def test_suite_runs_as_an_ordinary_user_with_pytest_postgresql(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    done = nested_pytest({"HOME": str(tmp_path), "TMPDIR": str(tmp_path),
                          "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis")}, user="postgres")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
