"""The program under Pulumi mocks with gateway.api: gateway-api: what it creates, in which order."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import pulumi
import pytest
import yaml

from components.config import ConfigError, parse_stack_config
from components.istio_mesh.gateway_api import cluster_crd_versions

from .conftest import valid_raw
from .json_api_handler import JsonApiHandler
from .program_harness import Run, run_program

COMMAND = "command:remote:Command"
RELEASE = "kubernetes:helm.sh/v3:Release"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
ENVOY_FILTER = "kubernetes:networking.istio.io/v1alpha3:EnvoyFilter"
AUTHZ = "kubernetes:security.istio.io/v1:AuthorizationPolicy"
DEPLOYMENT_PATCH = "kubernetes:apps/v1:DeploymentPatch"


def _gateway_api(install: bool = True) -> dict:
    raw = valid_raw()
    raw["gateway"]["api"] = "gateway-api"
    raw["istio"]["install"] = install
    raw["access"] = {"allow": ["198.51.100.0/24"], "deny": [], "trustedPeers": ["203.0.113.10/32"]}
    return raw


def test_crds_then_istiod_then_envoy_filter_then_overlay_then_gateway_then_haproxy():
    run = run_program(_gateway_api())
    crds = run.all(CRD)
    assert "gateways.gateway.networking.k8s.io" in {c.inputs["metadata"]["name"] for c in crds}
    assert [r.inputs["chart"] for r in run.all(RELEASE)] == ["base", "istiod"]
    base, istiod = run.all(RELEASE)
    assert {c.urn for c in crds} <= set(base.dependencies)
    envoy_filter = run.one(ENVOY_FILTER, "-proxy-protocol-gateway-api-envoyfilter")
    overlay, gateway = run.one(CONFIG_MAP), run.one(GATEWAY)
    assert istiod.urn in envoy_filter.dependencies
    # The generated pods start with the EnvoyFilter that owns their PROXY listener filters in place.
    assert envoy_filter.urn in gateway.dependencies
    assert overlay.urn in gateway.dependencies  # istiod refuses a parametersRef to a missing ConfigMap
    assert gateway.inputs["spec"]["infrastructure"]["parametersRef"]["name"] == overlay.inputs["metadata"]["name"]
    config = run.one(COMMAND, "-edge-1-config")
    assert gateway.urn in config.dependencies  # HAProxy sends PROXY once the gateway reads it
    for policy in run.all(AUTHZ) + [run.one(ENVOY_FILTER, "-trusted-peers")]:
        assert "selector" not in policy.inputs["spec"] and "workloadSelector" not in policy.inputs["spec"]
        assert policy.inputs["spec"]["targetRefs"][0]["kind"] == "Gateway"
    assert run.all(DEPLOYMENT_PATCH) == []
    assert run.outputs["gateway"]["kind"] == "Gateway"
    # Declared by the IstioGateway; earlier versions made them under the IstioMesh: aliases keep them.
    mesh = run.one("source-ip-edge:istio:IstioMesh").urn
    assert overlay.aliases == [(mesh, "edge-mesh-istio-ingressgateway-gateway-parameters")]
    assert gateway.aliases == [(mesh, "edge-mesh-gateway-istio-ingressgateway")]


def test_adopted_istio_reads_the_gateway_api_crds_before_the_gateway():
    run = run_program(_gateway_api(install=False))
    assert run.all(RELEASE) == [] and run.all(CRD) == []  # nothing installed: reads only
    gateway = run.one(GATEWAY)
    read = {urn.rsplit("::", 1)[1] for urn in gateway.dependencies if "CustomResourceDefinition" in urn}
    assert read == {
        f"edge-mesh-{kind}.gateway.networking.k8s.io"
        for kind in ("gatewayclasses", "gateways", "httproutes", "tlsroutes")
    }


def test_allow_and_deny_policies_are_in_place_before_haproxy_moves_the_lock_after():
    """A Gateway API gateway's pods get no traffic before HAProxy sends to them, so its allow and
    deny lists go in with the Gateway, never after HAProxy (a gateway.api switch would otherwise
    serve visitors unfiltered for a moment); the trusted-peer lock still waits for HAProxy."""
    run = run_program(_gateway_api())
    gateway, config = run.one(GATEWAY), run.one(COMMAND, "-edge-1-config")
    policies = run.all(AUTHZ)
    assert policies
    for policy in policies:
        assert gateway.urn in policy.dependencies
        assert config.urn not in policy.dependencies
        # HAProxy waits for them: without this edge the two ran side by side, and the lab saw the
        # allow policy created 45 ms after haproxy.cfg changed (a fresh-clone CI run).
        assert policy.urn in config.dependencies
    assert config.urn in run.one(ENVOY_FILTER, "-trusted-peers").dependencies


GATEWAY_API_CRDS = ["gatewayclasses", "gateways", "httproutes", "tlsroutes"]


def _served(*kinds: str, gateway_versions=("v1", "v1beta1")) -> dict[str, set[str]]:
    return {
        f"{kind}.gateway.networking.k8s.io": set(gateway_versions) if kind == "gateways" else {"v1"} for kind in kinds
    }


def test_an_adopted_cluster_without_a_gateway_api_crd_is_refused_before_any_resource_naming_the_keys():
    asked, run = [], Run()

    def cluster(config, names):
        asked.append(list(names))
        return _served("gatewayclasses", "gateways", "httproutes")

    with pytest.raises(pulumi.RunError) as caught:
        run_program(_gateway_api(install=False), crd_versions=cluster, run=run)
    message = str(caught.value)
    assert asked == [[f"{kind}.gateway.networking.k8s.io" for kind in GATEWAY_API_CRDS]]
    assert message.startswith("source-ip-edge:gateway.api: gateway-api needs the Gateway API CRDs"), message
    assert "source-ip-edge:istio.install: false" in message and "lacks tlsroutes.gateway.networking.k8s.io:" in message
    assert "\n" not in message
    assert run.registrations == []  # refused before anything is declared, so before anything is applied


def test_an_adopted_cluster_with_pre_v1_gateway_api_crds_is_refused():
    with pytest.raises(
        pulumi.RunError,
        match=r"^source-ip-edge:gateway.api: .* serves only v1alpha2, v1beta1 \(Gateway API before v1.0\)",
    ):
        run_program(
            _gateway_api(install=False),
            crd_versions=lambda config, names: _served(*GATEWAY_API_CRDS, gateway_versions=("v1beta1", "v1alpha2")),
        )


def test_a_terminating_https_listener_does_not_need_tlsroutes():
    raw = _gateway_api(install=False)
    raw["gateway"]["httpsTls"] = {"mode": "Terminate", "certificateSecrets": ["edge-tls"]}
    run = run_program(raw, crd_versions=lambda config, names: _served("gatewayclasses", "gateways", "httproutes"))
    assert run.one(GATEWAY).inputs["spec"]["listeners"][1]["tls"]["mode"] == "Terminate"


def test_the_cluster_is_not_read_when_the_stack_installs_the_crds_or_uses_the_chart():
    def no_cluster(config, names):
        raise AssertionError(f"read the cluster for {names}")

    chart = valid_raw()
    chart["istio"]["install"] = False
    for raw in (_gateway_api(install=True), chart):
        assert run_program(raw, crd_versions=no_cluster).registrations


# ---------------------------------------------------------------------------- the cluster read


class _FakeApiServer(JsonApiHandler):
    """Answers the one request the read makes, as kube-apiserver does: the CRD, or a 404 Status."""

    crds: dict[str, list[tuple[str, bool]]] = {}
    status_for_all: int | None = None

    def do_GET(self):  # noqa: N802 (BaseHTTPRequestHandler's name)
        prefix = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
        name = self.path.removeprefix(prefix)
        if self.status_for_all is not None:
            self._send(
                self.status_for_all,
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": self.status_for_all},
            )
        elif self.path.startswith(prefix) and name in self.crds:
            group = name.split(".", 1)[1]
            self._send(
                200,
                {
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": name},
                    "spec": {
                        "group": group,
                        "scope": "Namespaced",
                        "names": {"plural": name.split(".")[0], "kind": "Kind"},
                        "versions": [
                            {"name": v, "served": served, "storage": i == 0}
                            for i, (v, served) in enumerate(self.crds[name])
                        ],
                    },
                },
            )
        else:
            self._send(
                404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
            )


@pytest.fixture
def api_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeApiServer.crds = {
        "gateways.gateway.networking.k8s.io": [("v1", True), ("v1beta1", True), ("v1alpha2", False)],
        "httproutes.gateway.networking.k8s.io": [("v1", True)],
    }
    _FakeApiServer.status_for_all = None
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _kubeconfig(server: str, context: str = "edge") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "elsewhere",
        "clusters": [
            {"name": "c", "cluster": {"server": server}},
            {"name": "other", "cluster": {"server": "http://127.0.0.1:9"}},
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": context, "context": {"cluster": "c", "user": "u"}},
            {"name": "elsewhere", "context": {"cluster": "other", "user": "u"}},
        ],
    }


NAMES = [
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "tlsroutes.gateway.networking.k8s.io",
]


def test_the_cluster_read_returns_served_versions_and_leaves_out_missing_crds(api_server, tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(_kubeconfig(api_server)))
    monkeypatch.setenv("KUBECONFIG", str(path))
    raw = _gateway_api(install=False)
    raw["kubernetes"] = {"context": "edge"}  # the explicit provider's context, not the file's current one
    versions = cluster_crd_versions(parse_stack_config(raw), NAMES)
    assert versions == {
        "gateways.gateway.networking.k8s.io": {"v1", "v1beta1"},
        "httproutes.gateway.networking.k8s.io": {"v1"},
    }


@pytest.mark.parametrize("given_as", ["contents", "path"])
def test_the_cluster_read_uses_the_default_providers_kubeconfig_and_context(
    api_server, monkeypatch, tmp_path, given_as
):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    contents = yaml.safe_dump(_kubeconfig(api_server, context="ci"))
    if given_as == "path":
        (tmp_path / "kubeconfig").write_text(contents)
    kubeconfig = contents if given_as == "contents" else str(tmp_path / "kubeconfig")
    pulumi.runtime.set_all_config({"kubernetes:kubeconfig": kubeconfig, "kubernetes:context": "ci"}, [])
    try:
        versions = cluster_crd_versions(parse_stack_config(_gateway_api(install=False)), NAMES)
    finally:
        pulumi.runtime.set_all_config({}, [])
    assert set(versions) == {"gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io"}


@pytest.mark.parametrize("status,words", [(403, "HTTP 403"), (500, "HTTP 500")])
def test_a_cluster_that_refuses_the_read_is_one_line_naming_the_key(api_server, tmp_path, monkeypatch, status, words):
    _FakeApiServer.status_for_all = status
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(_kubeconfig(api_server)))
    monkeypatch.setenv("KUBECONFIG", str(path))
    raw = _gateway_api(install=False)
    raw["kubernetes"] = {"context": "edge"}
    with pytest.raises(ConfigError) as caught:
        cluster_crd_versions(parse_stack_config(raw), NAMES)
    message = str(caught.value)
    assert message.startswith("source-ip-edge:istio.install: false with gateway.api: gateway-api: could not read"), (
        message
    )
    assert words in message and "\n" not in message


def test_a_missing_kubeconfig_context_is_one_line_naming_the_key(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(_kubeconfig("http://127.0.0.1:9")))
    monkeypatch.setenv("KUBECONFIG", str(path))
    raw = _gateway_api(install=False)
    raw["kubernetes"] = {"context": "no-such-context"}
    with pytest.raises(ConfigError, match=r"^source-ip-edge:istio.install: .*no-such-context.*kubernetes.context$"):
        cluster_crd_versions(parse_stack_config(raw), NAMES)


def test_an_unreachable_cluster_is_one_line_naming_the_key(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(_kubeconfig("http://127.0.0.1:9")))  # the discard port: nothing listens
    monkeypatch.setenv("KUBECONFIG", str(path))
    raw = _gateway_api(install=False)
    raw["kubernetes"] = {"context": "edge"}
    with pytest.raises(ConfigError) as caught:
        cluster_crd_versions(parse_stack_config(raw), NAMES)
    assert str(caught.value).startswith(
        "source-ip-edge:istio.install: false with gateway.api: gateway-api: could not read"
    )
    assert "Connection refused" in str(caught.value) and "\n" not in str(caught.value)


def test_a_mode_switch_adds_resources_it_never_renames_one():
    """Every Kubernetes object of one gateway.api mode is a Pulumi resource of its own name (URN),
    the chart's names unchanged: a switch creates and deletes, never replaces. A replacement to
    another object name leaves a pending delete of the old name, which a failed switch and the
    update back would run against the object the update back made again (seen in the lab)."""
    chart_raw = _gateway_api()
    chart_raw["gateway"]["api"] = "istio"
    chart, gwapi = run_program(chart_raw), run_program(_gateway_api())
    kinds = (ENVOY_FILTER, AUTHZ)
    chart_urns = {r.urn for kind in kinds for r in chart.all(kind)}
    gwapi_urns = {r.urn for kind in kinds for r in gwapi.all(kind)}
    assert chart_urns and gwapi_urns and chart_urns.isdisjoint(gwapi_urns)
    assert any(urn.endswith("::edge-proxy-protocol-envoyfilter") for urn in chart_urns)  # unchanged for existing stacks
