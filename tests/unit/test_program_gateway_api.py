"""The program under Pulumi mocks with gateway.api: gateway-api: what it creates, in which order."""

from __future__ import annotations

from .conftest import valid_raw
from .program_harness import run_program

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
    envoy_filter = run.one(ENVOY_FILTER, "-proxy-protocol-envoyfilter")
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


def test_adopted_istio_reads_the_gateway_api_crds_before_the_gateway():
    run = run_program(_gateway_api(install=False))
    assert run.all(RELEASE) == [] and run.all(CRD) == []  # nothing installed: reads only
    gateway = run.one(GATEWAY)
    read = {urn.rsplit("::", 1)[1] for urn in gateway.dependencies if "CustomResourceDefinition" in urn}
    assert read == {
        f"edge-mesh-{kind}.gateway.networking.k8s.io" for kind in ("gatewayclasses", "gateways", "httproutes", "tlsroutes")
    }


def test_allow_and_deny_policies_are_in_place_before_haproxy_moves_the_lock_after():
    """A Gateway API gateway's pods get no traffic before HAProxy sends to them, so its allow and
    deny lists go in with the Gateway, never after HAProxy (a gateway.api switch would otherwise
    serve visitors unfiltered for a moment); the trusted-peer lock still waits for HAProxy."""
    run = run_program(_gateway_api())
    gateway, config = run.one(GATEWAY), run.one(COMMAND, "-edge-1-config")
    for policy in run.all(AUTHZ):
        assert gateway.urn in policy.dependencies
        assert config.urn not in policy.dependencies
    assert config.urn in run.one(ENVOY_FILTER, "-trusted-peers").dependencies
