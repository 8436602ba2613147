"""Istio installed the way `istio.install: true` installs it: Helm releases base, istiod and gateway
from the lab's chart repository, awaited, against the lab's API server (hack/lab/control-plane.sh with
CP_ISTIO=stack), with the real istiod started for the istiod chart's pod and stopped when it goes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lab.conftest import wait_until
from tests.lab.test_control_plane import control_plane_instance, helm_for, kubectl

RELEASES = [("istio-base", "base"), ("istiod", "istiod"), ("istio-ingressgateway", "gateway")]


@pytest.fixture(scope="module")
def stack_control_plane():
    yield from control_plane_instance("sietc-cps", "198.18.14", "stack")


def istiod_pid(cp: dict) -> int | None:
    path = Path(cp["istiod"]["pidFile"])
    return int(path.read_text()) if path.is_file() and path.read_text().strip() else None


def running(pid: int | None) -> bool:
    return (
        pid is not None and Path(f"/proc/{pid}").is_dir() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    )


def test_base_istiod_gateway_install_awaited_and_uninstall_in_reverse(stack_control_plane, tmp_path) -> None:
    cp = stack_control_plane
    helm = helm_for(cp, tmp_path / "helm")
    assert istiod_pid(cp) is None, "istiod runs before its chart is installed"

    for release, chart in RELEASES:
        extra = ["--set", "service.type=NodePort"] if chart == "gateway" else []
        install = helm(
            "install",
            release,
            chart,
            "--repo",
            cp["chartRepository"],
            "--version",
            cp["chartVersion"],
            "--namespace",
            "istio-system",
            *extra,
            "--wait",
            "--timeout",
            "300s",
        )
        assert install.returncode == 0, f"helm install {release}:\n{install.stdout}{install.stderr}"

    assert running(istiod_pid(cp)), "the bridge did not start istiod for the istiod chart's pod"
    gateway = json.loads(
        kubectl(cp, "-n", "istio-system", "get", "pods", "-l", "app=istio-ingressgateway", "-o", "json")
    )["items"]
    assert len(gateway) == 1 and "proxyv2" in gateway[0]["spec"]["containers"][0]["image"]

    # Unlabelled objects are validated too: the base chart's istiod-default-validator. Once
    # istiod has seen its own probe rejected the webhook is fail-closed; wait for that.
    bad = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-cidr, namespace: istio-system}
spec:
  rules:
  - from:
    - source: {remoteIpBlocks: ["10.0.0.0/33"]}
"""
    refused = wait_until(
        lambda: kubectl(cp, "apply", "--dry-run=server", "-f", "-", stdin=bad, check=False).returncode != 0, 60
    )
    proc = kubectl(cp, "apply", "--dry-run=server", "-f", "-", stdin=bad, check=False)
    assert refused and 'admission webhook "validation.istio.io" denied the request' in proc.stderr, proc.stderr

    pid = istiod_pid(cp)
    for release, _ in reversed(RELEASES):
        uninstall = helm("uninstall", release, "--namespace", "istio-system", "--wait", "--timeout", "120s")
        assert uninstall.returncode == 0, f"helm uninstall {release}:\n{uninstall.stdout}{uninstall.stderr}"
    assert wait_until(lambda: not running(pid), 30), "istiod kept running after its pod was gone"

    hooks = kubectl(cp, "get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o", "name")
    assert hooks.strip() == ""
    assert kubectl(cp, "-n", "istio-system", "get", "all", "-o", "name").strip() == ""
    # Istio's base chart marks its CRDs helm.sh/resource-policy: keep: uninstall leaves them.
    crds = kubectl(cp, "get", "crd", "-o", "name").split()
    assert "customresourcedefinition.apiextensions.k8s.io/envoyfilters.networking.istio.io" in crds
