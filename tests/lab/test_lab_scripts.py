"""The lab's scripts with a lab another checkout left: removed when none of its processes runs, refused while one does.

A run killed before its `make lab-down` leaves namespaces and a run directory whose processes are
gone; the next `make lab` on that machine (a CI run on a fresh clone) must not be stopped by them.
A lab with any process left is someone's running lab and is never touched.

These run the scripts' own functions against a run directory in a temporary folder and namespaces
with a prefix of their own (LAB_NS_PREFIX), so they never meet the lab-test lab or `make lab`'s.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hack.lab.labkit import REPO
from tests.lab.conftest import wait_until

LAB_NAME = "lab-test"
NS_PREFIX = "sieu"
NAMESPACE = f"{NS_PREFIX}-rt"
# What up.sh and down.sh run first: the same two files, then the check.
CHECK = 'source hack/lab/common.sh && source hack/lab/host-lib.sh && refuse_foreign_lab && echo "carried on"'


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def _finished_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def foreign_lab(tmp_path: Path):
    """Another checkout's lab-test run directory, marked up, owning the name, with one namespace."""
    run_base = tmp_path / "run"
    lab_dir = run_base / f"{LAB_NAME}-0000abcd"
    (lab_dir / "pids").mkdir(parents=True)
    (lab_dir / "control-plane" / "pids").mkdir(parents=True)
    (lab_dir / "up").touch()
    (lab_dir / "pids" / "gw1-nginx.pid").write_text(f"{_finished_pid()}\n")
    (lab_dir / "control-plane" / "pids" / "charts-http.pid").write_text(f"{_finished_pid()}\n")
    (run_base / f"{LAB_NAME}.owner").write_text(f"{lab_dir}\n")
    assert NAMESPACE not in _namespaces(), f"{NAMESPACE} is left from an earlier run"
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        yield run_base, lab_dir
    finally:
        if NAMESPACE in _namespaces():
            subprocess.run(["ip", "netns", "del", NAMESPACE], check=True)


def _in_namespace(pid: int) -> bool:
    listed = subprocess.run(["ip", "netns", "pids", NAMESPACE], capture_output=True, text=True, check=True)
    return str(pid) in listed.stdout.split()


def _check(run_base: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, LAB_NAME=LAB_NAME, LAB_RUN_BASE=str(run_base), LAB_NS_PREFIX=NS_PREFIX)
    return subprocess.run(["bash", "-c", CHECK], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_a_lab_with_no_process_left_is_removed_and_the_new_lab_carries_on(foreign_lab) -> None:
    run_base, lab_dir = foreign_lab
    own_output = REPO / "build" / LAB_NAME
    own_output_existed = own_output.exists()

    result = _check(run_base)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"the lab '{LAB_NAME}' from {lab_dir} has no process left" in result.stdout
    assert result.stdout.rstrip().endswith("carried on")
    assert not lab_dir.exists()
    assert not (run_base / f"{LAB_NAME}.owner").exists()
    assert NAMESPACE not in _namespaces()
    assert own_output.exists() == own_output_existed, "this checkout's build/lab-test is not the other lab's"


@pytest.mark.parametrize("where", ["pid file", "namespace"])
def test_a_lab_with_a_process_left_is_refused_and_untouched(foreign_lab, where: str) -> None:
    run_base, lab_dir = foreign_lab
    if where == "pid file":
        process = subprocess.Popen(["sleep", "120"])
        (lab_dir / "pids" / "apt-http.pid").write_text(f"{process.pid}\n")
    else:
        process = subprocess.Popen(["ip", "netns", "exec", NAMESPACE, "sleep", "120"])
        assert wait_until(lambda: _in_namespace(process.pid), 5, interval=0.05), (
            f"pid {process.pid} never entered {NAMESPACE}"
        )
    try:
        result = _check(run_base)
        assert process.poll() is None, "the other lab's process still runs"
    finally:
        process.kill()
        process.wait()

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"a lab '{LAB_NAME}' from {lab_dir} is up on the lab machine" in result.stderr
    assert "carried on" not in result.stdout
    assert (lab_dir / "up").exists()
    assert (run_base / f"{LAB_NAME}.owner").read_text().strip() == str(lab_dir)
    assert NAMESPACE in _namespaces()
