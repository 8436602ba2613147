"""Istio object helpers shared by the components: how our objects are named and attach to the
gateway (a selector on the chart's pod labels, or `targetRefs` to a Gateway API Gateway), and the
names istiod gives a Gateway API gateway's generated objects. Pure: imports nothing from pulumi."""

from __future__ import annotations

from typing import Any

from components.config import StackConfig

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_CLASS = "istio"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


def uses_gateway_api(config: StackConfig) -> bool:
    return config.gateway.api == "gateway-api"


def generated_name(config: StackConfig) -> str:
    """The name istiod gives the generated Deployment, Service and ServiceAccount."""
    return f"{config.istio.gateway_name}-{GATEWAY_CLASS}"


def object_name_prefix(config: StackConfig) -> str:
    """The prefix of the stack's Istio objects' names (EnvoyFilters, AuthorizationPolicies). A
    Gateway API gateway's are named after its generated workload, so that switching gateway.api
    creates them beside the other mode's, which keep serving the old gateway until HAProxy has
    moved and are deleted at the end of the update, instead of being rewritten in place under it."""
    return generated_name(config) if uses_gateway_api(config) else config.istio.gateway_name


def generated_pod_labels(config: StackConfig) -> dict[str, str]:
    """Labels istiod's kube-gateway template puts on the generated pods."""
    return {
        GATEWAY_NAME_LABEL: config.istio.gateway_name,
        "gateway.networking.k8s.io/gateway-class-name": GATEWAY_CLASS,
        "gateway.istio.io/managed": "istio.io-gateway-controller",
    }


def gateway_target_refs(config: StackConfig) -> list[dict[str, str]]:
    """How Istio objects attach to the Gateway: a selector on its pods is ineffective (IST0166)."""
    return [{"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": config.istio.gateway_name}]


def workload_attachment(config: StackConfig, selector_key: str) -> dict[str, Any]:
    """The spec fields that attach an Istio object to our gateway: `targetRefs` to the Gateway, or
    with the gateway chart a selector on its pod labels (`selector_key` is the kind's field name:
    `workloadSelector` for an EnvoyFilter, `selector` for an AuthorizationPolicy)."""
    if uses_gateway_api(config):
        return {"targetRefs": gateway_target_refs(config)}
    labels = dict(config.istio.gateway_labels)
    return {selector_key: {"labels": labels} if selector_key == "workloadSelector" else {"matchLabels": labels}}


def gateway_envoy_filter(config: StackConfig, name: str, patches: list[dict[str, Any]]) -> dict[str, Any]:
    """An EnvoyFilter of ours on the gateway, attached the way this gateway kind wants."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": name, "namespace": config.istio.namespace},
        "spec": {**workload_attachment(config, "workloadSelector"), "configPatches": patches},
    }


def parameters_name(config: StackConfig) -> str:
    return f"{config.istio.gateway_name}-gateway-parameters"
