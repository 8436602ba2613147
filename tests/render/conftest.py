"""Render the example stacks once per session; find Istio's CRDs and istioctl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The istio.io/istio module whose CRDs (manifests/charts/base/files/crd-all.gen.yaml) we validate
# against: the same commit gateway-preview/ compiles istiod's generator from.
ISTIO_MODULE_PATH = "istio.io/istio"
# The project's example stacks, and the gateway preview's Gateway API variants (adopted Istio with
# native PROXY; a terminating HTTPS listener), whose objects the schema checks cover too.
VARIANTS_ROOT = ROOT / "hack" / "gateway-preview" / "testdata" / "stacks"
VARIANT_STACKS = ("gwapi-native", "gwapi-terminate")
STACKS = ("dev", "prod", "gwapi") + VARIANT_STACKS


def istio_module_version() -> str:
    go_mod = (ROOT / "hack" / "gateway-preview" / "go.mod").read_text()
    for line in go_mod.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in (ISTIO_MODULE_PATH, "require") and ISTIO_MODULE_PATH in parts:
            return parts[parts.index(ISTIO_MODULE_PATH) + 1]
    raise AssertionError("hack/gateway-preview/go.mod does not require istio.io/istio")


@pytest.fixture(scope="session")
def istio_module_dir() -> Path:
    """The istio.io/istio module from the Go module proxy (cached in GOMODCACHE)."""
    version = istio_module_version()
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{ISTIO_MODULE_PATH}@{version}"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT / "hack" / "gateway-preview",
    )
    assert result.returncode == 0, result.stderr or result.stdout
    return Path(json.loads(result.stdout)["Dir"])


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for stack in STACKS:
        target = tmp_path_factory.mktemp("render") / stack
        project_root = VARIANTS_ROOT if stack in VARIANT_STACKS else ROOT
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "components.render",
                "--stack",
                stack,
                "--out",
                str(target),
                "--project-root",
                str(project_root),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        out[stack] = target
    return out


@pytest.fixture(scope="session")
def istioctl() -> str:
    """istioctl from the toolchain (`make toolchain`); missing is a failure, never a skip."""
    path = shutil.which("istioctl", path=os.environ.get("PATH"))
    assert path, 'istioctl is not on PATH: run `make toolchain` and `eval "$(make -s toolchain-env)"`'
    return path
