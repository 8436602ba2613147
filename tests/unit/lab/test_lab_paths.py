"""The lab keeps its live state outside the checkout: every path hack/lab/common.sh computes for the lab
scripts (host roots, pid files, keys, the owner file, the cache) lies outside the repository, except
build/<lab> for plain files. A host root with /proc in it inside the worktree made a recursive walk
of the checkout endless. Runs without root: it only sources hack/lab/common.sh."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import ROOT

# Paths inside the checkout on purpose: the checkout itself, and build/<lab> (lab.json, rendered YAML).
IN_CHECKOUT_ON_PURPOSE = {"LAB_REPO", "LAB_OUT"}
# Live state the scripts must have computed, so the check below cannot pass by finding nothing.
LIVE_STATE = {"LAB_DIR", "HOST_ROOT", "HOST_PID_FILE", "PID_DIR", "OWNER_FILE", "LAB_CACHE", "ROOTFS_TARBALL"}

# The variables common.sh defines (those it finds in the environment are left out: LAB_NAME, HOME).
PRINT_COMMON_VARIABLES = r"""
before=$(compgen -v)
source "$1/hack/lab/common.sh"
for name in $(compgen -v); do
  grep -qxF "$name" <<<"$before" || printf '%s=%s\0' "$name" "${!name}"
done
"""


def _common_variables(checkout: Path, lab_name: str, home: Path) -> dict[str, str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "LAB_NAME": lab_name}
    result = subprocess.run(
        ["bash", "-c", PRINT_COMMON_VARIABLES, "bash", str(checkout)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(item.split("=", 1) for item in result.stdout.split("\0") if item)


def _inside(path: str, directory: Path) -> bool:
    return Path(path).resolve().is_relative_to(directory.resolve())


@pytest.mark.parametrize("lab_name", ["lab", "lab-test"])
def test_no_live_path_of_the_lab_is_inside_the_checkout(lab_name: str, tmp_path: Path) -> None:
    variables = _common_variables(ROOT, lab_name, tmp_path)
    assert variables.keys() >= LIVE_STATE
    in_checkout = {
        name: value
        for name, value in variables.items()
        if value.startswith("/") and _inside(value, ROOT) and name not in IN_CHECKOUT_ON_PURPOSE
    }
    assert in_checkout == {}, "live lab state inside the checkout"
    assert Path(variables["LAB_OUT"]) == ROOT / "build" / lab_name


def test_each_checkout_and_each_lab_has_its_own_run_directory(tmp_path: Path) -> None:
    checkouts = [tmp_path / "one", tmp_path / "two"]
    for checkout in checkouts:
        (checkout / "hack" / "lab").mkdir(parents=True)
        shutil.copy(ROOT / "hack" / "lab" / "common.sh", checkout / "hack" / "lab" / "common.sh")
    run_dirs = {
        _common_variables(checkout, lab_name, tmp_path)["LAB_DIR"]
        for checkout in checkouts
        for lab_name in ("lab", "lab-test")
    }
    assert len(run_dirs) == 4
