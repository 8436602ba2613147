"""The Gateway API CRDs of a gateway.api: gateway-api stack, as resources of the IstioMesh: the
pinned install (or a read of the ones an adopted cluster has); and the look at an adopted
cluster's CRDs the program makes before it declares anything."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.config import ConfigError, StackConfig
from components.istio_gateway.placement import NodeSeen, PodSeen
from components.istio_mesh.gateway_api_crds import gateway_api_install, required_crds
from components.istio_objects import GATEWAY_NAME_LABEL

if TYPE_CHECKING:
    import kubernetes

CLUSTER_READ_TIMEOUT_SECONDS = 15


def cluster_crd_versions(config: StackConfig, names: Sequence[str]) -> dict[str, set[str]]:
    """The versions each of the CRDs `names` serves in the cluster the stack's Kubernetes provider
    uses; a CRD the cluster lacks is left out. Read with the Kubernetes Python client, from the
    kubeconfig and context the provider would use: `kubernetes.context` (this project's key, an
    explicit provider) with $KUBECONFIG or ~/.kube/config; otherwise the default provider's
    `kubernetes:kubeconfig` (a path or the file's contents) and `kubernetes:context`."""
    import kubernetes  # here: about 0.3 s to import, and only adopted gateway-api stacks read the cluster

    try:
        client = _api_client(config)
    except (kubernetes.config.ConfigException, OSError, yaml.YAMLError) as error:
        raise _unreadable(error) from None
    versions: dict[str, set[str]] = {}
    with client:
        api = kubernetes.client.ApiextensionsV1Api(client)
        for name in names:
            try:
                crd = api.read_custom_resource_definition(name, _request_timeout=CLUSTER_READ_TIMEOUT_SECONDS)
            except kubernetes.client.exceptions.ApiException as error:
                if error.status == 404:
                    continue
                raise _unreadable(f"HTTP {error.status} {error.reason} for {name}") from None
            except Exception as error:  # noqa: BLE001 the transport's errors (urllib3) say why in one line
                raise _unreadable(error) from None
            versions[name] = {version.name for version in crd.spec.versions if version.served}
    return versions


def cluster_gateway_placement(config: StackConfig) -> tuple[list[NodeSeen], list[PodSeen]]:
    """The cluster's nodes (name, InternalIP and ExternalIP addresses) and the gateway's pods (node,
    Ready), read like cluster_crd_versions from the kubeconfig the provider uses. The pods are those of
    istio.gatewayLabels in istio.namespace, or with gateway.api gateway-api the Gateway's
    (gateway.networking.k8s.io/gateway-name). Raises ConfigError when the cluster cannot be read."""
    import kubernetes

    if config.gateway.api == "gateway-api":
        labels = {GATEWAY_NAME_LABEL: config.istio.gateway_name}
    else:
        labels = dict(config.istio.gateway_labels)
    selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
    try:
        client = _api_client(config)
    except (kubernetes.config.ConfigException, OSError, yaml.YAMLError) as error:
        raise _placement_unreadable(error) from None
    with client:
        api = kubernetes.client.CoreV1Api(client)
        try:
            node_list = api.list_node(_request_timeout=CLUSTER_READ_TIMEOUT_SECONDS)
            pod_list = api.list_namespaced_pod(
                config.istio.namespace, label_selector=selector, _request_timeout=CLUSTER_READ_TIMEOUT_SECONDS
            )
        except kubernetes.client.exceptions.ApiException as error:
            raise _placement_unreadable(f"HTTP {error.status} {error.reason}") from None
        except Exception as error:  # noqa: BLE001 the transport's errors (urllib3) say why in one line
            raise _placement_unreadable(error) from None
    nodes = [
        NodeSeen(
            str(node.metadata.name if node.metadata else ""),
            tuple(
                a.address
                for a in (node.status.addresses if node.status and node.status.addresses else [])
                if a.type in ("InternalIP", "ExternalIP")
            ),
        )
        for node in node_list.items
    ]
    pods = [
        PodSeen(
            str(pod.metadata.name if pod.metadata else ""),
            pod.spec.node_name if pod.spec else None,
            # Ready, and not on its way out: a terminating pod is leaving its node.
            (pod.metadata is None or pod.metadata.deletion_timestamp is None)
            and any(
                c.type == "Ready" and c.status == "True"
                for c in (pod.status.conditions if pod.status and pod.status.conditions else [])
            ),
        )
        for pod in pod_list.items
    ]
    return nodes, pods


def _placement_unreadable(reason: object) -> ConfigError:
    first_line = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return ConfigError(
        "gateway.nodes",
        f"could not read where the adopted Istio's gateway pods run ({first_line}); "
        "check the kubeconfig and source-ip-edge:kubernetes.context",
    )


def _api_client(config: StackConfig) -> kubernetes.client.ApiClient:
    import kubernetes

    if config.kubernetes.context is not None:
        return kubernetes.config.new_client_from_config(
            config_file=_kubeconfig_path(), context=config.kubernetes.context
        )
    # The raw values: kubernetes:kubeconfig is often a secret, and Config.get warns on a secret.
    context = pulumi.runtime.get_config("kubernetes:context")
    path_or_contents = pulumi.runtime.get_config("kubernetes:kubeconfig")
    if not path_or_contents:
        return kubernetes.config.new_client_from_config(config_file=_kubeconfig_path(), context=context)
    path = Path(path_or_contents).expanduser()
    if "\n" not in path_or_contents and path.is_file():
        return kubernetes.config.new_client_from_config(config_file=str(path), context=context)
    return kubernetes.config.new_client_from_config_dict(yaml.safe_load(path_or_contents), context=context)


def _kubeconfig_path() -> str:
    # Read now, not when the client library was imported (its default is fixed at import).
    return os.environ.get("KUBECONFIG") or "~/.kube/config"


def _unreadable(reason: object) -> ConfigError:
    first_line = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return ConfigError(
        "istio.install",
        f"false with gateway.api: gateway-api: could not read the cluster's Gateway API CRDs ({first_line}); "
        "check the kubeconfig and source-ip-edge:kubernetes.context",
    )


_INSTALL_KINDS = {
    "CustomResourceDefinition": k8s.apiextensions.v1.CustomResourceDefinition,
    "ValidatingAdmissionPolicy": k8s.admissionregistration.v1.ValidatingAdmissionPolicy,
    "ValidatingAdmissionPolicyBinding": k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding,
}


def gateway_api_crds(
    name: str, config: StackConfig, provider: k8s.Provider | None, parent: pulumi.Resource
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
