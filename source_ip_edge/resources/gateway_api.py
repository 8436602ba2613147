"""The Gateway API objects of a gateway.api: gateway-api stack, as resources of the IstioMesh: the
pinned Gateway API CRDs (or a read of the ones an adopted cluster has), the Service overlay
ConfigMap and the Gateway."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from source_ip_edge.config import StackConfig
from source_ip_edge.render.gateway_api import gateway, gateway_api_install, gateway_parameters, required_crds
from source_ip_edge.resources.custom_resource import custom_resource

_INSTALL_KINDS = {
    "CustomResourceDefinition": k8s.apiextensions.v1.CustomResourceDefinition,
    "ValidatingAdmissionPolicy": k8s.admissionregistration.v1.ValidatingAdmissionPolicy,
    "ValidatingAdmissionPolicyBinding": k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding,
}


def gateway_api_crds(
    name: str, config: StackConfig, provider: Optional[k8s.Provider], parent: pulumi.Resource
) -> list[pulumi.Resource]:
    """istio.install: true: the pinned standard-channel install. false: a read of each CRD the stack
    needs, so that a cluster without them fails before the Gateway is created, naming the CRD."""
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    created: list[pulumi.Resource] = []
    for obj in gateway_api_install(config):
        kind = _INSTALL_KINDS[obj["kind"]]
        created.append(kind(f"{name}-{obj['metadata']['name']}", metadata=obj["metadata"], spec=obj["spec"], opts=opts))
    for crd in required_crds(config) if not config.istio.install else []:
        # A read, not a create: a missing CRD fails the preview with the provider's "not found" for it.
        created.append(k8s.apiextensions.v1.CustomResourceDefinition.get(f"{name}-{crd}", crd, opts=opts))
    return created


def gateway_api_gateway(
    name: str, config: StackConfig, provider: Optional[k8s.Provider], parent: pulumi.Resource, after: Sequence[Any]
) -> list[pulumi.Resource]:
    """The Service overlay ConfigMap, then the Gateway (istiod refuses a parametersRef to a missing one)."""
    parameters, gateway_object = gateway_parameters(config), gateway(config)
    if gateway_object is None or parameters is None:
        return []
    opts = pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=list(after))
    overlay = k8s.core.v1.ConfigMap(f"{name}-{parameters['metadata']['name']}", metadata=parameters["metadata"], data=parameters["data"], opts=opts)
    return [
        overlay,
        custom_resource(
            f"{name}-gateway-{gateway_object['metadata']['name']}",
            gateway_object,
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[overlay])),
        ),
    ]
