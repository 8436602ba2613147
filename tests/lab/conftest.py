"""Fixtures for the lab layer: a lab instance of its own ('lab-test') and its stack, via the Automation API.

hack/lab/up.sh also starts the lab's Kubernetes control plane (CP_ISTIO=stack), which the stack installs
Istio into with Helm; the Automation API runs every command with KUBECONFIG set to it.
Everything is torn down in finalizers, also when a test fails: the stack is destroyed
and removed, then hack/lab/down.sh stops the control plane, halts the HAProxy host (a systemd-nspawn
container, by its pid), stops every other process in the lab's namespaces by pid and removes the
lab's run directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from hack.lab.labkit import REPO, Lab

LAB_NAME = "lab-test"
STACK_NAME = "lab-test"


def _lab_script(script: str, *args: str) -> None:
    env = dict(os.environ, LAB_NAME=LAB_NAME)
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "lab" / script), *args], env=env, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"hack/lab/{script} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def assert_visitors_arrive(lab: Lab, schemes: tuple[str, ...] = ("http", "https")) -> None:
    """Every visitor's own address is what the gateway stand-in read from the PROXY header."""
    for visitor in lab.visitors:
        for scheme in schemes:
            assert lab.seen_by_gateway(visitor, scheme) == visitor.address, (visitor, scheme)


def wait_until(predicate, seconds: float, interval: float = 0.5) -> bool:
    """Polls `predicate` until it is true or `seconds` have passed; its last answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def api_time(value: str) -> float:
    """A Kubernetes timestamp (RFC 3339, seconds, `Z`) as seconds since the epoch."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def host_machine(action: str, host) -> None:
    """One HAProxy host of the test lab as a machine (hack/lab/host.sh): halt, cut (its power) or boot."""
    _lab_script("host.sh", action, host.name)


@dataclass
class Edge:
    """The lab and the stack under test, plus everything the runs printed (checked for secrets)."""

    lab: Lab
    stack: object
    host_before: str = ""
    """The host as the lab made it, before any `pulumi up`: packages, haproxy's unit state."""
    cluster_before: set[str] = field(default_factory=set)
    """Every object in the lab's API server before any `pulumi up` (Lab.cluster_objects)."""
    hosts_before: dict[str, str] = field(default_factory=dict)
    """Each host of the HA pair as the lab made it (pair_host_snapshot), by host name."""
    logs: list[str] = field(default_factory=list)

    def collect(self, text: str) -> None:
        self.logs.append(text)

    def up(self, stack=None, **kwargs):
        """`pulumi up` of the stack under test (or another stack of the lab), its output collected."""
        return (stack or self.stack).up(color="never", on_output=self.collect, **kwargs)

    def sshd_logins(self) -> int:
        """Logins the host's sshd accepted, from the host's journal (sshd runs as Debian's ssh.service)."""
        return self.lab.host_log("sshd").count("Accepted publickey")


@pytest.fixture(scope="session")
def edge():
    if os.geteuid() != 0:
        pytest.fail("the lab creates network namespaces: run as root (make lab-test)")
    if shutil.which("pulumi") is None:
        pytest.fail("no pulumi on PATH: run through `make lab-test`, which builds and loads the toolchain")
    from pulumi import automation as auto

    stack = None
    try:
        _lab_script("up.sh")
        _lab_script("stack.sh", "prepare")  # creates the stack, sets the SSH key secret from stdin
        lab = Lab.load(LAB_NAME)
        # The kubernetes provider reads KUBECONFIG; the stack file names the lab's context in it.
        stack = auto.select_stack(
            stack_name=STACK_NAME,
            work_dir=str(REPO),
            opts=auto.LocalWorkspaceOptions(env_vars={"KUBECONFIG": str(lab.kubeconfig)}),
        )
        # Start with one gateway node; test_config_change adds the second.
        stack.remove_config("source-ip-edge:gateway.nodes[1]", path=True)
        yield Edge(
            lab=lab,
            stack=stack,
            host_before=host_snapshot(lab),
            hosts_before={host.name: pair_host_snapshot(lab, host) for host in lab.hosts},
            cluster_before=lab.cluster_objects(),
        )
    finally:
        try:
            if stack is not None:
                try:
                    stack.destroy(color="never")
                finally:
                    stack.workspace.remove_stack(STACK_NAME, force=True)
        finally:
            _lab_script("down.sh")


# What destroy must give back: the installed packages and haproxy's unit state and files.
HOST_SNAPSHOT = (
    "dpkg-query -W -f '${db:Status-Status} ${binary:Package} ${Version}\\n' | grep '^installed ' | sort; "
    "systemctl is-enabled haproxy 2>&1 || true; systemctl is-active haproxy 2>&1 || true; "
    "ls -la /etc/haproxy /var/lib/source-ip-edge 2>&1 || true"
)


def host_snapshot(lab: Lab) -> str:
    result = lab.ssh(HOST_SNAPSHOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


# What destroy must give back on each host of the pair: packages, both units, their files.
PAIR_HOST_SNAPSHOT = (
    "dpkg-query -W -f '${db:Status-Status} ${binary:Package} ${Version}\\n' | grep '^installed ' | sort; "
    "systemctl is-enabled haproxy keepalived 2>&1 || true; systemctl is-active haproxy keepalived 2>&1 || true; "
    "ls -la /etc/haproxy /etc/keepalived /var/lib/source-ip-edge 2>&1 || true; ip -o -4 addr show | "
    "grep -v ' lo ' || true"
)


def pair_host_snapshot(lab: Lab, host) -> str:
    result = lab.ssh(PAIR_HOST_SNAPSHOT, address=host.address)
    assert result.returncode == 0, result.stderr
    return result.stdout


# Istio's base chart marks its CRDs `helm.sh/resource-policy: keep`, so `helm uninstall` (the
# Release's delete) leaves them, as Istio documents; deleting them would delete every Istio object
# of the cluster, other users' too. The API server keeps an APIService per CRD group version.
KEPT_BY_HELM = re.compile(
    r"^apiextensions\.k8s\.io/v1 CustomResourceDefinition"
    r" /[a-z]+\.(networking|security|telemetry|extensions)\.istio\.io$"
    r"|^apiregistration\.k8s\.io/v1 APIService /v[0-9a-z]+\.(networking|security|telemetry|extensions)\.istio\.io$"
)
# What the running istiod wrote itself, which no chart and no stack object owns, so Helm and Pulumi
# do not know it: its self-signed CA, the root certificate and CRL it distributes to every
# namespace, its leader-election and IP-allocation ConfigMaps. Istio's uninstall guide removes
# them with the istio-system namespace (which the lab made before the stack, as a cluster may have).
WRITTEN_BY_ISTIOD = re.compile(
    r"^v1 ConfigMap [a-z0-9-]+/istio-ca-(root-cert|crl)$"
    r"|^v1 ConfigMap istio-system/(istio-leader|istio-namespace-controller-election|istio-ip-autoallocate)$"
    r"|^v1 Secret istio-system/istio-ca-secret$"
)


def cluster_left_after_destroy(edge: Edge) -> tuple[set[str], set[str], set[str]]:
    """What the lab's API server holds after a destroy that it did not hold before any `pulumi up`:
    (Istio's CRDs, which Helm keeps on purpose; what istiod wrote itself; everything else, which
    must be empty)."""
    added = edge.lab.cluster_objects() - edge.cluster_before
    kept = {obj for obj in added if KEPT_BY_HELM.match(obj)}
    by_istiod = {obj for obj in added if WRITTEN_BY_ISTIOD.match(obj)}
    return kept, by_istiod, added - kept - by_istiod


def shared_texts(edge: Edge) -> dict[str, str]:
    """Everything a user shares or keeps of a stack, by name: scanned for secrets by the tests."""
    return {
        "logs of the runs": "\n".join(edge.logs),
        # `pulumi stack export` as a user would share it (the Automation API's export shows secrets).
        "exported state": subprocess.run(
            ["pulumi", "stack", "export", "--stack", STACK_NAME],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout,
        "outputs": str({k: v.value for k, v in edge.stack.outputs().items()}),
        f"Pulumi.{STACK_NAME}.yaml": (REPO / f"Pulumi.{STACK_NAME}.yaml").read_text(),
    }


def backend_files(stack_name: str) -> list[Path]:
    """The file backend's files for one stack (state, backups, history)."""
    url = os.environ.get("PULUMI_BACKEND_URL", "")
    assert url.startswith("file://"), f"the lab tests use a file backend, not {url!r}"
    root = Path(url[len("file://") :]).expanduser() / ".pulumi"
    return [p for p in root.rglob("*") if p.is_file() and stack_name in p.name]
