"""hack/lab/control-plane.sh: a kwokctl cluster from the toolchain's binaries, with a controller manager,
a scheduler and kwok nodes, Istio's charts applied and the real istiod running outside it, serving
validation and injection webhooks the API server calls; `down` leaves no process, namespace or file.

It runs an instance of its own (CP_DIR, CP_NS, CP_NET), so neither `make lab` nor `make lab-test`'s
control plane is touched. Every wait is bounded; the finalizer runs `down` and checks it by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hack.lab.labkit import REPO

BINARIES = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kwokctl",
    "kubectl",
    "istioctl",
    "pilot-discovery",
    "helm",
]
CP_NS = "sietc-cp"
CP_NET = "198.18.12"
GATEWAYS = {"lab-node-1": "192.0.2.50", "lab-node-2": "192.0.2.51"}  # hack/lab/common.sh GATEWAY1/2


def pinned(key: str) -> str:
    for line in (REPO / "hack" / "toolchain" / "versions.env").read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].strip()
    raise KeyError(key)


def script(env: dict[str, str], action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "hack" / "lab" / "control-plane.sh"), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def processes_with(text: str) -> list[int]:
    """Pids whose command line mentions text (the instance's directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def control_plane_instance(cp_ns: str, cp_net: str, istio: str, extra_env: dict[str, str] | None = None):
    """Bring up an instance of hack/lab/control-plane.sh of its own; yield its control-plane.json; then
    `down`, checked: no process naming its directory, no namespace, no directory. `extra_env`: more of
    the script's settings (KUBE_PROXY_NODES)."""
    if os.geteuid() != 0:
        pytest.skip("the control plane runs in a network namespace: run as root (make lab-test)")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    assert not missing, f"not on PATH: {missing}; run through `make lab-test`, which loads the toolchain"
    run_base = Path(os.environ.get("LAB_RUN_BASE", "/run/source-ip-edge"))
    cp_dir = run_base / f"control-plane-test-{cp_ns}-{os.getpid()}"
    env = dict(
        os.environ, LAB_NAME="lab", CP_DIR=str(cp_dir), CP_NS=cp_ns, CP_NET=cp_net, CP_ISTIO=istio, **(extra_env or {})
    )
    env.pop("KUBECONFIG", None)
    started = time.monotonic()
    up = script(env, "up")
    try:
        assert up.returncode == 0, f"control-plane.sh up failed:\n{up.stdout}\n{up.stderr}"
        info = json.loads((cp_dir / "control-plane.json").read_text())
        info["upSeconds"] = time.monotonic() - started
        info["env"] = env
        info["dir"] = cp_dir
        info["pidsWhileUp"] = processes_with(str(cp_dir))
        yield info
    finally:
        down = script(env, "down")
        assert down.returncode == 0, f"control-plane.sh down failed:\n{down.stdout}\n{down.stderr}"
        assert processes_with(str(cp_dir)) == [], "processes of the control plane survived `down`"
        assert cp_ns not in namespaces()
        assert not cp_dir.exists()


@pytest.fixture(scope="module")
def control_plane():
    """Istio installed by the lab (the adopt path's Istio), istiod running for its pod."""
    yield from control_plane_instance(CP_NS, CP_NET, "lab")


def kubectl(
    cp: dict, *args: str, timeout: int = 60, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess | str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", cp["kubeconfig"], "--request-timeout=20s", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )
    if not check:
        return proc
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def authorization_policy(name: str, cidr: str) -> str:
    # istio.io/rev: the minimal profile's validating webhook selects objects of its revision.
    return f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: istio-system, labels: {{istio.io/rev: default}}}}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {{remoteIpBlocks: ["{cidr}"]}}
"""


def test_every_component_runs_as_a_process_of_its_own(control_plane) -> None:
    commands = set()
    for pid in control_plane["pidsWhileUp"]:
        with contextlib.suppress(OSError):
            commands.add(Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name)
    # kwokctl runs kwok through a link named kwok-controller; `ip netns exec` execs istiod.
    assert {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok-controller",
        "pilot-discovery",
    } <= commands, commands


def test_the_api_server_is_the_pinned_release_reached_from_the_root_namespace(control_plane) -> None:
    assert control_plane["server"] == f"https://{CP_NET}.2:6443"
    version = json.loads(kubectl(control_plane, "get", "--raw", "/version"))
    assert version["gitVersion"] == f"v{pinned('KUBE_VERSION')}"


def test_kwok_nodes_are_ready_with_the_gateway_stand_ins_addresses(control_plane) -> None:
    nodes = json.loads(kubectl(control_plane, "get", "nodes", "-o", "json"))["items"]
    found = {}
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]
        found[node["metadata"]["name"]] = [
            a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"
        ]
    assert found == {name: [addr] for name, addr in GATEWAYS.items()}


def test_a_deployment_is_scheduled_onto_kwok_nodes_and_becomes_available(control_plane) -> None:
    # The Deployment and ReplicaSet controllers (controller manager), the scheduler and kwok's
    # pod stages all have to work for this; nothing here creates a pod by hand.
    kubectl(control_plane, "create", "deployment", "probe", "--image=registry.invalid/probe:1", "--replicas=2")
    kubectl(control_plane, "rollout", "status", "deployment/probe", "--timeout=90s", timeout=120)
    pods = json.loads(kubectl(control_plane, "get", "pods", "-l", "app=probe", "-o", "json"))["items"]
    assert len(pods) == 2
    assert {p["spec"]["nodeName"] for p in pods} <= set(GATEWAYS)
    assert all(p["status"]["phase"] == "Running" for p in pods)


def test_istiod_is_ready_and_sees_the_api_servers_services(control_plane) -> None:
    kubectl(control_plane, "create", "service", "clusterip", "probe-svc", "--tcp=8080:8080")
    deadline = time.monotonic() + 60
    body = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(
            ["ip", "netns", "exec", CP_NS, "curl", "-sf", "--max-time", "5", "http://127.0.0.1:8080/debug/registryz"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        body = proc.stdout
        if "probe-svc.default.svc.cluster.local" in body:
            break
        time.sleep(1)
    assert "probe-svc.default.svc.cluster.local" in body, body[:2000]


def test_up_again_is_a_no_op(control_plane) -> None:
    again = script(control_plane["env"], "up")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout + again.stderr


def test_istios_validation_webhook_is_answered_by_the_real_istiod(control_plane) -> None:
    # The CRD's schema accepts any string here; only istiod's validation knows /33 is no CIDR.
    # istiod turns the webhook fail-closed once it saw its own probe rejected: wait for that.
    deadline = time.monotonic() + 60
    while True:
        proc = kubectl(
            control_plane, "apply", "-f", "-", stdin=authorization_policy("bad-cidr", "10.0.0.0/33"), check=False
        )
        if proc.returncode != 0 or time.monotonic() > deadline:
            break
        kubectl(control_plane, "-n", "istio-system", "delete", "authorizationpolicy", "bad-cidr")
        time.sleep(1)
    assert proc.returncode != 0, "an AuthorizationPolicy with 10.0.0.0/33 was accepted"
    assert 'admission webhook "rev.validation.istio.io" denied the request' in proc.stderr, proc.stderr
    assert "bad CIDR range (10.0.0.0/33)" in proc.stderr
    kubectl(control_plane, "apply", "-f", "-", stdin=authorization_policy("good-cidr", "198.51.100.0/24"))


def test_gateway_pods_get_their_proxy_from_the_real_injector(control_plane) -> None:
    # The gateway chart's pods ask for the `gateway` injection template; without a reachable
    # injector (failurePolicy Fail) their ReplicaSet could not create them at all.
    kubectl(control_plane, "create", "namespace", "gw-probe")
    kubectl(
        control_plane,
        "apply",
        "-f",
        "-",
        stdin="""\
apiVersion: apps/v1
kind: Deployment
metadata: {name: gateway, namespace: gw-probe}
spec:
  replicas: 1
  selector: {matchLabels: {app: gateway}}
  template:
    metadata:
      labels: {app: gateway, istio: ingressgateway, sidecar.istio.io/inject: "true"}
      annotations: {inject.istio.io/templates: gateway}
    spec:
      containers:
      - {name: istio-proxy, image: auto}
""",
    )
    kubectl(control_plane, "-n", "gw-probe", "rollout", "status", "deployment/gateway", "--timeout=90s", timeout=120)
    pod = json.loads(kubectl(control_plane, "-n", "gw-probe", "get", "pods", "-o", "json"))["items"][0]
    proxy = pod["spec"]["containers"][0]
    assert proxy["image"] != "auto" and "proxyv2" in proxy["image"], proxy["image"]
    assert proxy["args"][:2] == ["proxy", "router"], proxy["args"]


def test_istios_charts_are_served_as_a_helm_repository(control_plane) -> None:
    index = subprocess.run(
        ["curl", "-sf", "--max-time", "10", f"{control_plane['chartRepository']}/index.yaml"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert index.returncode == 0
    version = control_plane["chartVersion"]
    assert version.endswith("-dev." + pinned("ISTIO_MODULE_VERSION").rsplit("-", 1)[1])
    for chart in ("base", "istiod", "gateway"):
        assert f"{control_plane['chartRepository']}/{chart}-{version}.tgz" in index.stdout


def helm_for(cp: dict, home: Path):
    """helm against the instance's API server, its own config and cache under home."""
    env = dict(
        os.environ,
        KUBECONFIG=cp["kubeconfig"],
        HELM_CACHE_HOME=str(home),
        HELM_CONFIG_HOME=str(home),
        HELM_DATA_HOME=str(home),
    )

    def helm(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["helm", *args], env=env, capture_output=True, text=True, timeout=360)

    return helm


def test_the_gateway_chart_installs_from_the_lab_repository_and_helm_waits_it_ready(control_plane, tmp_path) -> None:
    # Helm's --wait, as helm.v3.Release awaits: the Deployment's pod needs the real injector
    # (the gateway chart's pods carry only a placeholder container) and kwok to become Ready.
    helm = helm_for(control_plane, tmp_path / "helm")
    install = helm(
        "install",
        "probe-gateway",
        "gateway",
        "--repo",
        control_plane["chartRepository"],
        "--version",
        control_plane["chartVersion"],
        "--namespace",
        "istio-system",
        "--set",
        "service.type=NodePort",
        "--wait",
        "--timeout",
        "120s",
    )
    assert install.returncode == 0, install.stdout + install.stderr
    pods = json.loads(
        kubectl(control_plane, "-n", "istio-system", "get", "pods", "-l", "app=probe-gateway", "-o", "json")
    )["items"]
    assert len(pods) == 1 and pods[0]["spec"]["containers"][0]["image"] != "auto"
    uninstall = helm("uninstall", "probe-gateway", "--namespace", "istio-system", "--wait", "--timeout", "60s")
    assert uninstall.returncode == 0, uninstall.stdout + uninstall.stderr
