"""The toolchain under test: built (or reused from the cache) by hack/toolchain/build.py.

A missing binary fails the tests that need it; nothing here skips.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "hack" / "toolchain" / "build.py"


@pytest.fixture(scope="session")
def toolchain_bin() -> Path:
    """The toolchain's bin directory; building takes seconds when the cache is warm."""
    proc = subprocess.run([sys.executable, str(BUILD_SCRIPT), "build"], capture_output=True, text=True)
    assert proc.returncode == 0, f"toolchain build failed:\n{proc.stderr}"
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def toolchain_path(toolchain_bin: Path) -> str:
    return f"{toolchain_bin}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture
def pulumi_env(tmp_path: Path, toolchain_path: str) -> dict[str, str]:
    """An environment like `make toolchain-env`'s, with state, home and passphrase in tmp_path."""
    env = dict(os.environ)
    # The kubernetes provider refuses render-to-directory when KUBECONFIG is set (pulumi-kubernetes #4399).
    env.pop("KUBECONFIG", None)
    env.update(
        PATH=toolchain_path,
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        PULUMI_BACKEND_URL=f"file://{tmp_path / 'state'}",
        PULUMI_HOME=str(tmp_path / "pulumi-home"),
        PULUMI_CONFIG_PASSPHRASE="toolchain-test-only",
    )
    (tmp_path / "state").mkdir()
    return env
