"""Fixtures for the real-Envoy lab layer: the lab-test instance with the real gateway data plane
(LAB_DATA_PLANE=envoy: every gateway pod runs pilot-agent and the stock Envoy, hack/lab/node_agent.py),
the lab stack converged on it with `hack/lab/stack.sh up`, and the echo application installed
(hack/lab/app.sh). Torn down in the finalizer (destroy, then hack/lab/down.sh), also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from hack.lab.labkit import REPO, Lab

# lab-test under `make lab-envoy-test`; LAB_NAME=lab runs the same tests on the `lab` instance.
LAB_NAME = os.environ.get("LAB_NAME", "lab-test")
ENV = dict(os.environ, LAB_NAME=LAB_NAME, LAB_DATA_PLANE="envoy")


def lab_script(script: str, *args: str, timeout: float = 900) -> str:
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "lab" / script), *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"hack/lab/{script} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def gateway_pods(lab: Lab) -> list[dict]:
    """The gateway pods the API server holds (the chart's: label istio=ingressgateway)."""
    return lab.kube_json("pods", "-n", "istio-system", "-l", "istio=ingressgateway")["items"]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


@pytest.fixture(scope="session")
def envoy_lab():
    if os.geteuid() != 0:
        pytest.fail("the lab creates network namespaces: run as root (make lab-envoy-test)")
    if shutil.which("pulumi") is None or shutil.which("envoy") is None:
        pytest.fail("no pulumi or envoy on PATH: run through `make lab-envoy-test`, which loads the toolchain")
    try:
        lab_script("up.sh")
        lab_script("stack.sh", "up")
        lab_script("app.sh", "apply")
        lab = Lab.load(LAB_NAME)
        deadline = time.monotonic() + 180
        while not (pods := gateway_pods(lab)) or not all(ready(p) for p in pods):
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway pods not ready in 180 s: {json.dumps([p['status'] for p in pods])}")
            time.sleep(1)
        yield lab
    finally:
        if os.environ.get("LAB_ENVOY_KEEP") != "1":
            try:
                lab_script("app.sh", "delete")
                lab_script("stack.sh", "destroy")
            finally:
                lab_script("down.sh")
