"""An adopted Istio (istio.install: false): the program reads where the gateway pods run, through the
Kubernetes client against a fake API server, and warns for each node of gateway.nodes without a
ready one, naming the key."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pulumi
import pytest
import yaml

from components.config import ConfigError, parse_stack_config
from components.istio_gateway.placement import NodeSeen, PodSeen
from components.istio_mesh.gateway_api import cluster_gateway_placement

from .conftest import valid_raw
from .json_api_handler import JsonApiHandler
from .program_harness import run_program


def _node(name: str, *addresses: tuple[str, str]) -> dict:
    return {
        "metadata": {"name": name},
        "status": {"addresses": [{"type": kind, "address": address} for kind, address in addresses]},
    }


def _pod(name: str, node: str | None, ready: bool, terminating: bool = False) -> dict:
    metadata: dict = {"name": name, "namespace": "istio-system"}
    if terminating:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": metadata,
        "spec": {"nodeName": node, "containers": [{"name": "istio-proxy"}]} if node else {"containers": []},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


class _FakeApiServer(JsonApiHandler):
    nodes: list[dict] = []
    pods: list[dict] = []
    selectors: list[str] = []
    status_for_all: int | None = None

    def do_GET(self):  # noqa: N802 the stdlib's name
        url = urlparse(self.path)
        if self.status_for_all:
            return self._send(self.status_for_all, {"kind": "Status", "apiVersion": "v1", "code": self.status_for_all})
        if url.path == "/api/v1/nodes":
            return self._send(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": self.nodes})
        if url.path == "/api/v1/namespaces/istio-system/pods":
            self.selectors.append(parse_qs(url.query).get("labelSelector", [""])[0])
            return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": self.pods})
        return self._send(404, {"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound"})


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _FakeApiServer.nodes = [
        _node("node-a", ("InternalIP", "192.0.2.50"), ("Hostname", "node-a")),
        _node("node-b", ("InternalIP", "10.0.0.9"), ("ExternalIP", "192.0.2.51")),
    ]
    _FakeApiServer.pods = [_pod("gw-a", "node-a", True)]
    _FakeApiServer.selectors = []
    _FakeApiServer.status_for_all = None
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "edge",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "edge", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    yield path
    server.shutdown()
    server.server_close()


def _adopted(api: str = "istio") -> dict:
    raw = valid_raw()
    raw["istio"]["install"] = False
    raw["gateway"]["api"] = api
    raw["kubernetes"] = {"context": "edge"}
    return raw


def test_the_read_returns_nodes_by_address_and_pods_by_node_and_readiness(kubeconfig):
    _FakeApiServer.pods = [
        _pod("gw-a", "node-a", True),
        _pod("gw-b", "node-b", False),
        _pod("gw-old", "node-b", True, terminating=True),
        _pod("gw-pending", None, False),
    ]
    nodes, pods = cluster_gateway_placement(parse_stack_config(_adopted()))
    assert nodes == [NodeSeen("node-a", ("192.0.2.50",)), NodeSeen("node-b", ("10.0.0.9", "192.0.2.51"))]
    assert pods == [
        PodSeen("gw-a", "node-a", True),
        PodSeen("gw-b", "node-b", False),
        PodSeen("gw-old", "node-b", False),  # terminating: leaving its node
        PodSeen("gw-pending", None, False),
    ]
    assert _FakeApiServer.selectors == ["istio=ingressgateway"]


def test_the_gateway_api_pods_are_read_by_the_gateway_name_label(kubeconfig):
    cluster_gateway_placement(parse_stack_config(_adopted("gateway-api")))
    assert _FakeApiServer.selectors == ["gateway.networking.k8s.io/gateway-name=istio-ingressgateway"]


def test_a_cluster_that_refuses_the_read_is_one_line_naming_the_key(kubeconfig):
    _FakeApiServer.status_for_all = 403
    with pytest.raises(ConfigError) as caught:
        cluster_gateway_placement(parse_stack_config(_adopted()))
    message = str(caught.value)
    assert message.startswith("source-ip-edge:gateway.nodes: could not read where the adopted Istio's gateway pods")
    assert "HTTP 403" in message and "\n" not in message


@pytest.fixture
def warnings(monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: said.append(message))
    return said


def test_the_program_warns_for_a_listed_node_without_a_ready_gateway_pod(kubeconfig, warnings):
    run_program(_adopted(), gateway_placement=cluster_gateway_placement)
    assert warnings == [
        "source-ip-edge:gateway.nodes: gateway.nodes[1] 192.0.2.51: node node-b runs no gateway pod: its NodePorts "
        "drop HAProxy's traffic (externalTrafficPolicy: Local) and HAProxy marks it DOWN"
    ]


def test_no_warning_when_every_listed_node_runs_a_ready_pod(kubeconfig, warnings):
    _FakeApiServer.pods = [_pod("gw-a", "node-a", True), _pod("gw-b", "node-b", True)]
    run_program(_adopted(), gateway_placement=cluster_gateway_placement)
    assert warnings == []


def test_an_unreadable_cluster_is_a_warning_not_a_failure(kubeconfig, warnings):
    _FakeApiServer.status_for_all = 500
    run = run_program(_adopted(), gateway_placement=cluster_gateway_placement)
    assert run.edge is not None
    assert len(warnings) == 1 and warnings[0].startswith("source-ip-edge:gateway.nodes: could not read"), warnings


def test_a_stack_that_installs_istio_reads_nothing(warnings):
    def never(_config):
        raise AssertionError("read the cluster")

    run_program(valid_raw(), gateway_placement=never)
    assert warnings == []


DAEMONSET_PATCH = "kubernetes:apps/v1:DaemonSetPatch"
RELEASE = "kubernetes:helm.sh/v3:Release"


def test_named_nodes_give_the_gateway_release_a_daemonset_and_its_strategy_after_it():
    raw = valid_raw()
    raw["gateway"]["nodeNames"] = {"192.0.2.50": "node-a", "192.0.2.51": "node-b"}
    run = run_program(raw)
    gateway = next(r for r in run.all(RELEASE) if r.inputs["chart"] == "gateway")
    assert gateway.inputs["values"]["kind"] == "DaemonSet"
    patch = run.one(DAEMONSET_PATCH)
    assert gateway.urn in patch.dependencies
    assert patch.inputs["metadata"]["name"] == "istio-ingressgateway"
    assert patch.inputs["metadata"]["namespace"] == "istio-system"
    assert patch.inputs["spec"] == {
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    }
    # Without names: the chart's Deployment, no patch.
    assert run_program(valid_raw()).all(DAEMONSET_PATCH) == []
