"""Where the gateway pods run: one on each node of gateway.nodeNames (a DaemonSet from the gateway
chart, or a spread Deployment through a Gateway's parametersRef overlay), and the check of an
adopted Istio's pods against gateway.nodes. docs/gateway-placement.md gives the reasons. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.config import StackConfig

# A DaemonSet rolls a node's pod by deleting it first (maxUnavailable 1, maxSurge 0): the node then
# has no ready gateway pod until the new one is ready, and with externalTrafficPolicy Local it drops
# its NodePorts' traffic meanwhile. maxSurge 1 / maxUnavailable 0 starts the new pod beside the old
# one on the same node and deletes the old one once the new one is ready (apps/v1
# RollingUpdateDaemonSet; the gateway pods use no hostPort, which would forbid the surge).
GATEWAY_DAEMONSET_UPDATE_STRATEGY = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
# A Deployment cannot surge on the same node: with one pod required per node, a surge pod has no
# node to go to and stays Pending, which stalls the roll. So each pod is replaced in place, one at
# a time, and its node runs none meanwhile (HAProxy marks it DOWN from the drain's 503s first).
GATEWAY_DEPLOYMENT_STRATEGY = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"


def node_name_affinity(node_names: Iterable[str]) -> dict[str, Any]:
    """A pod affinity that admits exactly these nodes, by name (matchFields on metadata.name: a node's
    name is unique and always set, unlike the kubernetes.io/hostname label a provider may set otherwise)."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": list(node_names)}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def gateway_placement_values(config: StackConfig) -> dict[str, Any]:
    """The gateway chart's values for gateway.nodeNames: `kind: DaemonSet` on exactly those nodes, one
    pod each, which the scheduler cannot leave out and no autoscaler shrinks (the chart renders its
    HorizontalPodAutoscaler for a Deployment only). Unset: nothing, the chart's autoscaled Deployment."""
    if not config.gateway.node_names:
        return {}
    return {"kind": "DaemonSet", "affinity": node_name_affinity(config.gateway.node_names.values())}


def gateway_daemonset_patch(config: StackConfig) -> dict[str, Any] | None:
    """What the stack applies to the gateway chart's DaemonSet after the release: its update strategy,
    which the chart cannot set (its `strategy` value is a Deployment's field). None without one."""
    if not config.istio.install or config.gateway.api != "istio" or not config.gateway.node_names:
        return None
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        # The chart names its workload after the release (gateway.name in its _helpers.tpl).
        "metadata": {"name": config.istio.gateway_name, "namespace": config.istio.namespace},
        "spec": {"updateStrategy": GATEWAY_DAEMONSET_UPDATE_STRATEGY},
    }


def gateway_api_placement_overlays(config: StackConfig, pod_labels: Mapping[str, str]) -> dict[str, Any]:
    """gateway.api gateway-api with gateway.nodeNames: the `deployment` and `podDisruptionBudget`
    overlays of the Gateway's parametersRef ConfigMap (istiod generates a Deployment, never a
    DaemonSet): one replica per named node, at most one per node, only on those nodes, replaced one
    at a time; at most one evicted at a time. Empty without nodeNames."""
    names = list(config.gateway.node_names.values())
    if not names:
        return {}
    affinity = node_name_affinity(names)
    affinity["podAntiAffinity"] = {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": dict(pod_labels)}, "topologyKey": HOSTNAME_TOPOLOGY}
        ]
    }
    return {
        "deployment": {
            "spec": {
                "replicas": len(names),
                "strategy": GATEWAY_DEPLOYMENT_STRATEGY,
                "template": {"spec": {"affinity": affinity}},
            }
        },
        "podDisruptionBudget": {"spec": {"maxUnavailable": 1}},
    }


# --- an adopted Istio (istio.install: false): where its gateway pods run -------------------------


@dataclass(frozen=True)
class NodeSeen:
    """A node as the cluster reports it: its name and its addresses (InternalIP, ExternalIP)."""

    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class PodSeen:
    """A gateway pod as the cluster reports it: the node it runs on and its Ready condition."""

    name: str
    node_name: str | None
    ready: bool


def nodes_without_ready_gateway_pod(
    config: StackConfig, nodes: Sequence[NodeSeen], pods: Sequence[PodSeen]
) -> list[str]:
    """One line per address of gateway.nodes that runs no ready gateway pod, saying why; empty when
    every listed node runs one. A node is found by gateway.nodeNames when given, else by the address."""
    by_address: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    for node in nodes:
        for reported in node.addresses:
            try:
                by_address.setdefault(ipaddress.ip_address(reported), node.name)
            except ValueError:
                continue
    known = {node.name for node in nodes}
    ready_on = {pod.node_name for pod in pods if pod.ready and pod.node_name}
    placed_on = {pod.node_name for pod in pods if pod.node_name}
    problems = []
    for i, address in enumerate(config.gateway.nodes):
        where = f"gateway.nodes[{i}] {address}"
        name = config.gateway.node_names.get(address)
        if name is None:
            name = by_address.get(address)
            if name is None:
                problems.append(f"{where}: no node of the cluster has this InternalIP or ExternalIP")
                continue
        elif name not in known:
            problems.append(f"{where}: the cluster has no node {name} (gateway.nodeNames)")
            continue
        if name not in ready_on:
            state = "runs a gateway pod that is not ready" if name in placed_on else "runs no gateway pod"
            problems.append(f"{where}: node {name} {state}")
    return problems
