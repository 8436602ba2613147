"""gateway.api: gateway-api in the lab, with istiod's own deployment controller (Gateway API).

The lab-test stack, converged with the gateway chart by the earlier files, switches to a Gateway API
Gateway and back, each in one `pulumi up`. istiod deploys the Gateway's Deployment and Service in
the lab's API server; kwok runs its pods; the live xDS checks run on what istiod serves them. The
switch moves HAProxy to the lab's second NodePorts (the new Service cannot take NodePorts the old
one holds until the update ends); a switch that keeps them is refused by the await before anything
the old gateway had changed. Tests run in file order.
"""

from __future__ import annotations

import json

import pytest
from pulumi import automation as auto

from hack.lab import gateway_xds
from tests.lab.conftest import STACK_NAME, api_time, assert_visitors_arrive, wait_until

CONFIG = "/etc/haproxy/haproxy.cfg"
NAMESPACE = "istio-system"
GATEWAY = "istio-ingressgateway"
GENERATED = f"{GATEWAY}-istio"  # istiod's name for the Gateway's Deployment and Service


def _set_mode(edge, api: str, node_ports: dict[str, int]) -> None:
    """gateway.api and the NodePorts; a Gateway admits routes from namespaces labelled as the
    sample applications' (hack/gateway-preview/apps/gateway-api-routes.yaml), as Pulumi.gwapi.yaml does."""
    edge.stack.set_config("source-ip-edge:gateway.api", auto.ConfigValue(api), path=True)
    for role, port in node_ports.items():
        edge.stack.set_config(f"source-ip-edge:gateway.nodePorts.{role}", auto.ConfigValue(str(port)), path=True)
    if api == "gateway-api":
        edge.stack.set_config(
            "source-ip-edge:gateway.allowedRoutes.namespaces", auto.ConfigValue("Selector"), path=True
        )
        edge.stack.set_config(
            'source-ip-edge:gateway.allowedRoutes.namespaceLabels["source-ip-edge/routes"]',
            auto.ConfigValue("allowed"),
            path=True,
        )
    else:
        edge.stack.remove_config("source-ip-edge:gateway.allowedRoutes", path=True)


def _names(lab, kind: str) -> set[str]:
    return {item["metadata"]["name"] for item in lab.kube_json(kind, "-n", NAMESPACE)["items"]}


def _gateways(lab) -> list[dict]:
    """The Gateway API Gateways; none once the stack removed the Gateway API CRDs with the mode."""
    listed = lab.kubectl("get", "gateways.gateway.networking.k8s.io", "-n", NAMESPACE, "-o", "json")
    if listed.returncode != 0 and "doesn't have a resource type" in listed.stderr:
        return []
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)["items"]


@pytest.fixture(scope="module")
def chart_mode(edge):
    result = edge.up()
    assert result.summary.result == "succeeded"
    assert GATEWAY in _names(edge.lab, "deployments")
    return edge


def test_switch_to_gateway_api_moves_haproxy_after_the_new_gateway_is_ready(chart_mode) -> None:
    edge, lab = chart_mode, chart_mode.lab
    second = lab.gateway_service["secondNodePorts"]
    _set_mode(edge, "gateway-api", second)
    result = edge.up()
    assert result.summary.result == "succeeded"
    assert result.outputs["gateway"].value["kind"] == "Gateway"

    gateway = lab.kube_json("gateways.gateway.networking.k8s.io", "-n", NAMESPACE, GATEWAY)
    programmed = {c["type"]: c["status"] for c in gateway["status"]["conditions"]}
    assert programmed.get("Programmed") == "True", gateway["status"]
    # istiod's deployment controller made the workload; the chart's is gone with its release.
    deployments = _names(lab, "deployments")
    assert GENERATED in deployments and GATEWAY not in deployments, deployments
    service = lab.kube_json("service", "-n", NAMESPACE, GENERATED)
    assert service["spec"]["type"] == "NodePort" and service["spec"].get("externalTrafficPolicy") == "Local"
    node_ports = {p["port"]: p["nodePort"] for p in service["spec"]["ports"]}
    assert node_ports == {15021: second["status"], 80: second["http"], 443: second["https"]}, node_ports
    # The old mode's Istio objects were deleted at the end; the new ones target the Gateway.
    filters = _names(lab, "envoyfilters.networking.istio.io")
    assert filters == {f"{GENERATED}-proxy-protocol", f"{GENERATED}-trusted-peers"}, filters
    policies = lab.kube_json("authorizationpolicies.security.istio.io", "-n", NAMESPACE)["items"]
    assert policies and all(p["metadata"]["name"].startswith(GENERATED) for p in policies)
    assert all(p["spec"]["targetRefs"][0]["name"] == GATEWAY and "selector" not in p["spec"] for p in policies)

    # The order, from the records: the Gateway's pods were ready and its allow and deny policies in
    # place before HAProxy's config changed to its NodePorts (seconds-resolution API timestamps are
    # truncated, so "at or before" holds for them exactly when it held).
    config = lab.host_path(CONFIG)
    assert f":{second['http']}" in config.read_text()
    moved_at = config.stat().st_mtime
    pods = lab.kube_json("pods", "-n", NAMESPACE, "-l", f"gateway.networking.k8s.io/gateway-name={GATEWAY}")["items"]
    assert pods
    for pod in pods:
        ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready" and c["status"] == "True"]
        assert ready and api_time(ready[0]["lastTransitionTime"]) <= moved_at, (pod["metadata"]["name"], moved_at)
    for policy in policies:
        assert api_time(policy["metadata"]["creationTimestamp"]) <= moved_at, policy["metadata"]["name"]

    assert_visitors_arrive(lab)
    answer = gateway_xds.ask(lab, STACK_NAME, live=True)
    assert answer.returncode == 0, answer.output[-3000:]
    assert f"gateway pod {NAMESPACE}/{GENERATED}-" in answer.output


def test_switch_back_to_the_chart(chart_mode) -> None:
    edge, lab = chart_mode, chart_mode.lab
    _set_mode(edge, "istio", lab.gateway_service["nodePorts"])
    result = edge.up()
    assert result.summary.result == "succeeded"
    assert not _gateways(lab)
    # The generated workload is the Gateway's (owner references): the garbage collector removes it.
    assert wait_until(lambda: GENERATED not in _names(lab, "deployments") | _names(lab, "services"), 120)
    assert GATEWAY in _names(lab, "deployments")
    assert _names(lab, "envoyfilters.networking.istio.io") == {f"{GATEWAY}-proxy-protocol", f"{GATEWAY}-trusted-peers"}
    assert_visitors_arrive(lab)
    answer = gateway_xds.ask(lab, STACK_NAME, live=True)
    assert answer.returncode == 0, answer.output[-3000:]


def test_a_switch_that_keeps_the_node_ports_fails_before_the_old_gateway_changes(chart_mode) -> None:
    """The new Service cannot take NodePorts the chart's Service holds; istiod leaves the Gateway
    unprogrammed, the await fails the update, and nothing after the Gateway ran: the chart's
    gateway, its Istio objects and HAProxy's config are as they were, and visitors still arrive."""
    edge, lab = chart_mode, chart_mode.lab
    kinds = ("deployments", "services", "envoyfilters.networking.istio.io", "authorizationpolicies.security.istio.io")

    def versions() -> dict[str, str]:
        return {
            f"{kind}/{item['metadata']['name']}": item["metadata"]["resourceVersion"]
            for kind in kinds
            for item in lab.kube_json(kind, "-n", NAMESPACE)["items"]
            if item["metadata"]["name"].startswith(GATEWAY) and not item["metadata"]["name"].startswith(GENERATED)
        }

    before, config_before = versions(), lab.host_path(CONFIG).read_text()
    _set_mode(edge, "gateway-api", lab.gateway_service["nodePorts"])
    try:
        with pytest.raises(auto.CommandError) as failed:
            edge.up()
        assert "Programmed" in str(failed.value) or "timed out" in str(failed.value).lower(), str(failed.value)[-2000:]
        assert versions() == before
        assert lab.host_path(CONFIG).read_text() == config_before
        assert_visitors_arrive(lab)
    finally:
        _set_mode(edge, "istio", lab.gateway_service["nodePorts"])
    result = edge.up()
    assert result.summary.result == "succeeded"
    assert not _gateways(lab)
    assert wait_until(lambda: GENERATED not in _names(lab, "deployments") | _names(lab, "services"), 120)
    # The update back deleted only what the failed switch made: the chart's objects are all there.
    assert _names(lab, "envoyfilters.networking.istio.io") == {f"{GATEWAY}-proxy-protocol", f"{GATEWAY}-trusted-peers"}
    assert versions().keys() == before.keys()
    answer = gateway_xds.ask(lab, STACK_NAME, live=True)
    assert answer.returncode == 0, answer.output[-3000:]
