"""The lab's control plane binaries (etcd, Kubernetes, kwok, istiod) report the versions pinned
in hack/toolchain/versions.env: kwokctl reads `--version` to pick each component's flags."""

import re
import subprocess
from pathlib import Path

import pytest

from tests.toolchain.helpers import require_tool

VERSIONS_FILE = Path(__file__).resolve().parents[2] / "hack" / "toolchain" / "versions.env"


def pinned() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in VERSIONS_FILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def output(toolchain_path: str, *cmd: str) -> str:
    proc = subprocess.run([require_tool(cmd[0], toolchain_path), *cmd[1:]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def test_etcd_reports_its_version(toolchain_path) -> None:
    assert re.search(
        rf"^etcd Version: {re.escape(pinned()['ETCD_VERSION'])}$", output(toolchain_path, "etcd", "--version"), re.M
    )


@pytest.mark.parametrize("binary", ["kube-apiserver", "kube-controller-manager", "kube-scheduler"])
def test_kubernetes_components_report_the_release(toolchain_path, binary) -> None:
    # Unstamped builds say v0.0.0-master, which kwokctl would read as a pre-1.0 cluster.
    assert output(toolchain_path, binary, "--version").strip() == f"Kubernetes v{pinned()['KUBE_VERSION']}"


def test_kubectl_reports_the_release(toolchain_path) -> None:
    assert f"Client Version: v{pinned()['KUBE_VERSION']}" in output(toolchain_path, "kubectl", "version", "--client")


@pytest.mark.parametrize("binary", ["kwok", "kwokctl"])
def test_kwok_reports_its_version(toolchain_path, binary) -> None:
    assert re.search(rf"\bv{re.escape(pinned()['KWOK_VERSION'])}\b", output(toolchain_path, binary, "--version"))


def test_kwokctl_defaults_to_the_built_kubernetes_release(toolchain_path, tmp_path, monkeypatch) -> None:
    # Stamped at build time; unstamped, kwokctl would assume its own newer default release.
    monkeypatch.setenv("KWOK_WORKDIR", str(tmp_path / "kwok"))
    text = output(toolchain_path, "kwokctl", "config", "view")
    assert re.search(rf"^\s*kubeVersion: v{re.escape(pinned()['KUBE_VERSION'])}$", text, re.M), text


def test_pilot_discovery_reports_the_istio_module_version(toolchain_path) -> None:
    # stdout only: its memory-limit notice goes to stderr.
    proc = subprocess.run(
        [require_tool("pilot-discovery", toolchain_path), "version", "--short"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"client version: {pinned()['ISTIO_MODULE_VERSION']}"


def test_helm_reports_the_release_pulumi_kubernetes_embeds(toolchain_path) -> None:
    assert f'Version:"v{pinned()["HELM_VERSION"]}"' in output(toolchain_path, "helm", "version")
