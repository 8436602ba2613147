"""gateway.nodeNames: a gateway pod on every listed node, as the rendered Helm values, the DaemonSet's
update strategy and the Gateway API overlay say; the refusals of the key; and the check of an adopted
Istio's pods against gateway.nodes."""

from __future__ import annotations

import pytest
import yaml

from components.config import ConfigError
from components.edge.outputs import stack_outputs
from components.istio_gateway.chart import gateway_release
from components.istio_gateway.gateway_api import gateway_parameters
from components.istio_gateway.placement import (
    NodeSeen,
    PodSeen,
    gateway_daemonset_patch,
    nodes_without_ready_gateway_pod,
)
from components.istio_objects import GATEWAY_NAME_LABEL
from tests.unit.conftest import make_config

NAMES = {"192.0.2.50": "node-a", "192.0.2.51": "node-b"}


def _named(raw):
    raw["gateway"]["nodeNames"] = dict(NAMES)


def _gateway_values(config):
    return gateway_release(config).values


def _admitted_names(affinity):
    (term,) = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (field,) = term["matchFields"]
    assert (field["key"], field["operator"]) == ("metadata.name", "In")
    return field["values"]


def test_named_nodes_make_the_chart_a_daemonset_on_exactly_those_nodes():
    values = _gateway_values(make_config(_named))
    assert values["kind"] == "DaemonSet"
    assert _admitted_names(values["affinity"]) == ["node-a", "node-b"]
    # The rest of the chart's values are the ones without placement.
    unnamed = _gateway_values(make_config())
    assert {k: v for k, v in values.items() if k not in ("kind", "affinity")} == unnamed


def test_without_names_the_chart_keeps_its_deployment_and_no_strategy_patch():
    values = _gateway_values(make_config())
    assert "kind" not in values and "affinity" not in values
    assert gateway_daemonset_patch(make_config()) is None
    assert stack_outputs(make_config(), "")["gateway"]["kind"] == "Deployment"


def test_the_daemonset_rolls_with_a_second_pod_on_the_node_never_an_empty_node():
    patch = gateway_daemonset_patch(make_config(_named))
    assert patch["kind"] == "DaemonSet"
    assert patch["metadata"] == {"name": "istio-ingressgateway", "namespace": "istio-system"}
    assert patch["spec"] == {
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    }
    assert stack_outputs(make_config(_named), "")["gateway"]["kind"] == "DaemonSet"


def test_adopted_istio_is_not_placed():
    config = make_config(lambda r: (_named(r), r["istio"].update(install=False)))
    assert gateway_release(config) is None and gateway_daemonset_patch(config) is None


def test_gateway_api_overlay_spreads_one_pod_per_named_node():
    def gateway_api(raw):
        _named(raw)
        raw["gateway"]["api"] = "gateway-api"

    config = make_config(gateway_api)
    data = gateway_parameters(config)["data"]
    deployment = yaml.safe_load(data["deployment"])["spec"]
    assert deployment["replicas"] == 2
    # No surge: with one pod required per node, a surge pod would stay Pending and stall the roll.
    assert deployment["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    affinity = deployment["template"]["spec"]["affinity"]
    assert _admitted_names(affinity) == ["node-a", "node-b"]
    (anti,) = affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti == {
        "labelSelector": {"matchLabels": {GATEWAY_NAME_LABEL: "istio-ingressgateway"}},
        "topologyKey": "kubernetes.io/hostname",
    }
    assert yaml.safe_load(data["podDisruptionBudget"]) == {"spec": {"maxUnavailable": 1}}
    # Without names only the Service overlay.
    assert set(gateway_parameters(make_config(lambda r: r["gateway"].update(api="gateway-api")))["data"]) == {"service"}


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"192.0.2.50": "node-a"}, "has no name for 192.0.2.51 (gateway.nodes[1])"),
        ({**NAMES, "192.0.2.99": "node-c"}, "192.0.2.99 is not one of gateway.nodes"),
        ({"192.0.2.50": "node-a", "192.0.2.51": "node-a"}, "are both named node-a"),
        ({**NAMES, "node-c": "node-c"}, '"node-c" is not an IP address'),
        ({"192.0.2.50": "Node_A", "192.0.2.51": "node-b"}, "gateway.nodeNames.192.0.2.50"),
    ],
)
def test_node_names_refusals_name_the_key(names, message):
    with pytest.raises(ConfigError) as refused:
        make_config(lambda r: r["gateway"].update(nodeNames=names))
    assert str(refused.value).startswith("source-ip-edge:gateway.nodeNames")
    assert message in str(refused.value)


def test_node_names_need_node_ports():
    def load_balancer(raw):
        raw["gateway"].update(serviceType="LoadBalancer", nodes=["192.0.2.50"], nodeNames={"192.0.2.50": "n"})

    with pytest.raises(ConfigError, match="gateway.nodeNames: is only used with serviceType: NodePort"):
        make_config(load_balancer)


def test_node_names_follow_the_order_of_nodes_and_normalise_addresses():
    def v6(raw):
        raw["gateway"]["nodes"] = ["2001:db8::51", "192.0.2.50"]
        raw["gateway"]["nodeNames"] = {"192.0.2.50": "a", "2001:db8:0::51": "b"}

    values = _gateway_values(make_config(v6))
    assert _admitted_names(values["affinity"]) == ["b", "a"]


# --- an adopted Istio: where its gateway pods run -------------------------------------------------

NODES = [NodeSeen("node-a", ("192.0.2.50",)), NodeSeen("node-b", ("192.0.2.51", "198.51.100.200"))]


def test_every_listed_node_with_a_ready_pod_gives_no_warning():
    pods = [PodSeen("gw-1", "node-a", True), PodSeen("gw-2", "node-b", True)]
    assert nodes_without_ready_gateway_pod(make_config(), NODES, pods) == []


def test_a_listed_node_without_a_ready_pod_is_named():
    pods = [PodSeen("gw-1", "node-a", True), PodSeen("gw-2", "node-a", True)]
    assert nodes_without_ready_gateway_pod(make_config(), NODES, pods) == [
        "gateway.nodes[1] 192.0.2.51: node node-b runs no gateway pod"
    ]
    pods = [PodSeen("gw-1", "node-a", True), PodSeen("gw-2", "node-b", False), PodSeen("gw-3", None, False)]
    assert nodes_without_ready_gateway_pod(make_config(), NODES, pods) == [
        "gateway.nodes[1] 192.0.2.51: node node-b runs a gateway pod that is not ready"
    ]


def test_nodes_are_found_by_address_or_by_node_names():
    pods = [PodSeen("gw-1", "node-a", True), PodSeen("gw-2", "node-b", True)]
    unknown = [NodeSeen("node-a", ("192.0.2.50",)), NodeSeen("node-b", ("192.0.2.99",))]
    assert nodes_without_ready_gateway_pod(make_config(), unknown, pods) == [
        "gateway.nodes[1] 192.0.2.51: no node of the cluster has this InternalIP or ExternalIP"
    ]
    # gateway.nodeNames names them, whatever addresses the nodes report.
    named = make_config(lambda r: (_named(r), r["istio"].update(install=False)))
    assert nodes_without_ready_gateway_pod(named, unknown, pods) == []
    renamed = make_config(
        lambda r: (r["gateway"].update(nodeNames={**NAMES, "192.0.2.51": "node-c"}), r["istio"].update(install=False))
    )
    assert nodes_without_ready_gateway_pod(renamed, unknown, pods) == [
        "gateway.nodes[1] 192.0.2.51: the cluster has no node node-c (gateway.nodeNames)"
    ]
