"""The edge against the real gateway data plane: HAProxy -> the gateway pod's stock Envoy (started by
Istio's pilot-agent, configured by the live istiod) -> the echo backend. Every verdict here is Envoy's.

The tests run in file order on one lab and stack (tests/lab_envoy/conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

from components.haproxy_host.haproxy_cfg import ADMIN_SOCKET
from hack.lab.haproxy_runtime import wait_until_checked
from hack.lab.labkit import REPO, in_namespace
from hack.lab.prove import live_traffic_rows
from tests.lab_envoy.conftest import gateway_pods, lab_script


def _node_namespaces(lab) -> dict[str, str]:
    """Each node's address and the network namespace it lives in."""
    return {g["address"]: g["namespace"] for g in lab.gateways}


def _pod_namespace(lab, pod: dict) -> str:
    return lab.node_agent["namespacePrefix"] + hashlib.sha256(pod["metadata"]["uid"].encode()).hexdigest()[:7]


def _envoy_stat(lab, pod: dict, name: str) -> int:
    stats = in_namespace(_pod_namespace(lab, pod), ["curl", "-s", "--max-time", "5", "127.0.0.1:15000/stats"], 15)
    for line in stats.stdout.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def _raw(namespace: str, host: str, port: int, data: bytes) -> bytes:
    """Bytes sent from a namespace to host:port, and what came back before the peer closed."""
    script = (
        "import socket,sys\n"
        "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)\n"
        "s.sendall(sys.stdin.buffer.read())\n"
        "d=b''\n"
        "try:\n"
        "    while (c:=s.recv(4096)): d+=c\n"
        "except OSError: pass\n"
        "sys.stdout.buffer.write(d)\n"
    )
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, "python3", "-c", script, host, str(port)],
        input=data,
        capture_output=True,
        timeout=20,
    )
    return result.stdout


def _request(claim: str | None, host: str, port: int) -> bytes:
    header = f"PROXY TCP4 {claim} {host} 40000 {port}\r\n".encode() if claim else b""
    return header + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _gateway(lab) -> tuple[dict, str]:
    pod = gateway_pods(lab)[0]
    return pod, pod["status"]["hostIP"]


def test_every_gateway_pod_runs_pilot_agent_and_the_pinned_stock_envoy(envoy_lab) -> None:
    pods = gateway_pods(envoy_lab)
    assert pods
    for pod in pods:
        namespace = _pod_namespace(envoy_lab, pod)
        pids = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=10
        ).stdout.split()
        exes = {Path(os.readlink(f"/proc/{pid}/exe")).name: os.readlink(f"/proc/{pid}/exe") for pid in pids}
        assert {"pilot-agent", "envoy"} <= set(exes), exes
        version = subprocess.run([exes["envoy"], "--version"], capture_output=True, text=True, timeout=30).stdout
        assert "/1.39.3/Clean/RELEASE/BoringSSL" in version
        # The pod's namespace holds the pod IP the API server has, and nothing else.
        addresses = in_namespace(namespace, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], 10).stdout
        assert f" {pod['status']['podIP']}/32 " in addresses


def test_pod_ready_follows_envoy_readiness_on_15021(envoy_lab) -> None:
    for pod in gateway_pods(envoy_lab):
        ready = in_namespace(
            _node_namespaces(envoy_lab)[pod["status"]["hostIP"]],
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"http://{pod['status']['podIP']}:15021/healthz/ready",
            ],
            15,
        )
        assert ready.stdout == "200"
        agent_log = Path(envoy_lab.run_dir) / f"node-agent-{pod['spec']['nodeName'][-1]}.log"
        lines = [line for line in agent_log.read_text().splitlines() if pod["metadata"]["name"] in line]
        # Not ready until Envoy said so, then ready: the agent's reports in order.
        reports = [line.split("Ready=")[1] for line in lines if "Ready=" in line]
        assert reports[:1] == ["False"] and reports[-1] == "True", lines


def test_live_traffic_is_allowed_and_denied_by_envoy_on_the_visitors_real_address(envoy_lab) -> None:
    rows = live_traffic_rows(envoy_lab)
    assert all(row[-1] == "yes" for row in rows), rows
    for family in (".", ":"):
        verdicts = {row[6] for row in rows if family in row[1] and row[3] == "http"}
        assert {"200", "403"} <= verdicts, (family, rows)


def test_strict_mode_refuses_a_connection_without_a_proxy_header(envoy_lab) -> None:
    _, node = _gateway(envoy_lab)
    for port in (30080, 30443):
        assert _raw(envoy_lab.edge_namespace, node, port, _request(None, node, port)) == b""
    # The same request with a header from the HAProxy host is answered by the backend.
    reply = _raw(envoy_lab.edge_namespace, node, 30080, _request("198.51.100.7", node, 30080))
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"198.51.100.7\n")


def test_a_proxy_header_forged_by_a_peer_that_is_not_haproxy_is_refused(envoy_lab) -> None:
    pod, node = _gateway(envoy_lab)
    other_node = next(ns for address, ns in _node_namespaces(envoy_lab).items() if address != node)
    echo = envoy_lab.kube_json("pods", "-n", "lab-echo")["items"][0]
    denied_before = _envoy_stat(envoy_lab, pod, "source_ip_edge_trusted_peers.rbac.denied")
    peers = [
        (envoy_lab.visitors[0].namespace, node, 30080),  # a visitor straight at the NodePort
        (other_node, node, 30080),  # a namespace on the nodes' network
        (_pod_namespace(envoy_lab, echo), pod["status"]["podIP"], 80),  # a pod on the pod network
    ]
    for namespace, host, port in peers:
        assert _raw(namespace, host, port, _request("198.51.100.7", host, port)) == b"", namespace
    assert _envoy_stat(envoy_lab, pod, "source_ip_edge_trusted_peers.rbac.denied") == denied_before + len(peers)


def test_a_forged_x_forwarded_for_changes_nothing(envoy_lab) -> None:
    allowed = next(v for v in envoy_lab.visitors if v.allowed and ":" not in v.address)
    denied = next(v for v in envoy_lab.visitors if not v.allowed and ":" not in v.address)
    for visitor, claim, want in [(allowed, denied.address, "200"), (denied, allowed.address, "403")]:
        argv = ["curl", "-s", "--max-time", "5", "--interface", visitor.address, "-H", f"X-Forwarded-For: {claim}"]
        result = in_namespace(visitor.namespace, [*argv, "-w", "\n%{http_code}", visitor.url("http")], 15)
        body, _, code = result.stdout.rpartition("\n")
        assert code == want, (visitor, result.stdout)
        if want == "200":
            assert body.strip() == visitor.address  # the backend saw the real address, not the claim


def test_haproxy_checks_the_real_status_port_up_only_where_a_ready_pod_runs(envoy_lab) -> None:
    _, node = _gateway(envoy_lab)
    deadline = time.monotonic() + 30
    while True:
        states = wait_until_checked(envoy_lab.host_path(ADMIN_SOCKET), timeout=15)
        up = {s.server.removeprefix("node-") for s in states if s.status == "UP"}
        if up == {node} or time.monotonic() > deadline:
            break
        time.sleep(1)
    # externalTrafficPolicy Local: the node with the gateway pod is UP on Envoy's 15021; the other node
    # drops the check (no local endpoint), so HAProxy sends no visitor there.
    assert up == {node}, states
    assert all(s.check_code == "200" for s in states if s.status == "UP"), states


def _set_strict(lab, strict: bool) -> None:
    subprocess.run(
        [
            "pulumi",
            "config",
            "set",
            "--path",
            "--stack",
            lab.name,
            "source-ip-edge:proxyProtocol.strict",
            str(strict).lower(),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=60,
    )
    lab_script("stack.sh", "up")


def test_lenient_mode_accepts_a_connection_with_and_without_a_header_on_the_same_port(envoy_lab) -> None:
    _, node = _gateway(envoy_lab)
    edge = envoy_lab.edge_address
    _set_strict(envoy_lab, False)
    try:
        # The EnvoyFilter's new listener filter is pushed to the running Envoy: poll until it has it.
        deadline = time.monotonic() + 60
        while (plain := _raw(envoy_lab.edge_namespace, node, 30080, _request(None, node, 30080))) == b"":
            assert time.monotonic() < deadline, "lenient mode: a connection without a header is still closed"
            time.sleep(1)
        # Without a header the peer's own address is the client's (the HAProxy host, allowed by no list:
        # RBAC's allow list refuses it); with one, the claimed visitor's.
        assert plain.startswith(b"HTTP/1.1 403"), plain
        reply = _raw(envoy_lab.edge_namespace, node, 30080, _request("198.51.100.7", node, 30080))
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"198.51.100.7\n"), reply
        assert edge not in reply.decode()
    finally:
        _set_strict(envoy_lab, True)
    deadline = time.monotonic() + 60
    while _raw(envoy_lab.edge_namespace, node, 30080, _request(None, node, 30080)) != b"":
        assert time.monotonic() < deadline, "strict again: a connection without a header is still answered"
        time.sleep(1)
