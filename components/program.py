"""The program body, shared by __main__.py (a real `pulumi up`) and render.py (mocks)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import pulumi

from components.config import PROJECT, TOP_LEVEL_KEYS, ConfigError, StackConfig, check_known_keys, parse_stack_config
from components.edge.component import SourceIpEdge, SourceIpEdgeArgs
from components.istio_gateway.placement import NodeSeen, PodSeen, nodes_without_ready_gateway_pod
from components.istio_mesh.gateway_api import cluster_crd_versions, cluster_gateway_placement
from components.istio_mesh.gateway_api_crds import check_required_crds, required_crds

CrdVersions = Callable[[StackConfig, Sequence[str]], Mapping[str, Collection[str]]]
# The cluster's nodes and the gateway's pods; None: no cluster to read (the offline render).
GatewayPlacement = Callable[[StackConfig], tuple[Sequence[NodeSeen], Sequence[PodSeen]] | None]


def read_stack_config(project_dir: Path | None = None):
    """Read and validate `source-ip-edge:*`; a user mistake becomes one line, no traceback.
    `project_dir`: where access.allowFrom/denyFrom paths start (default: the working directory,
    which `pulumi` sets to the project directory)."""
    pulumi_config = pulumi.Config(PROJECT)
    try:
        check_known_keys(_all_config_keys())
        raw = {key: pulumi_config.get_object(key) for key in TOP_LEVEL_KEYS}
        ssh_private_key = pulumi_config.get_secret("sshPrivateKey")
        # The plain value only to check it (config.py never echoes it); the hosts get it as a
        # secret Output, so it is encrypted wherever it sits in the state.
        vrrp_password = pulumi.runtime.get_config(f"{PROJECT}:vrrpPassword")
        # Pulumi.yaml cannot declare it (optional, no default), so Pulumi does not insist on it
        # being encrypted: this does.
        if vrrp_password is not None and not pulumi.runtime.is_config_secret(f"{PROJECT}:vrrpPassword"):
            raise ConfigError("vrrpPassword", "must be a secret: `pulumi config set --secret vrrpPassword`")
        config = parse_stack_config(
            {key: value for key, value in raw.items() if value is not None},
            has_ssh_private_key=ssh_private_key is not None,
            vrrp_password=vrrp_password,
            project_dir=project_dir,
        )
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
    except ValueError as error:  # e.g. a value that is not valid JSON where an object is expected
        raise pulumi.RunError(f"{PROJECT}: {error}") from None
    secrets = {"ssh_private_key": ssh_private_key}
    if vrrp_password is not None:
        secrets["vrrp_password"] = pulumi.Output.secret(vrrp_password)
    return config, secrets


def _all_config_keys() -> set[str]:
    # The SDK has no public "list all keys"; its config map is where the engine puts them.
    keys = set(pulumi.runtime.get_config_env())
    keys.update(pulumi.runtime.config.CONFIG.get())
    return keys


def check_cluster(config: StackConfig, crd_versions: CrdVersions) -> None:
    """What the stack needs of an adopted cluster, checked before any resource is declared (in
    preview too): with gateway.api: gateway-api and istio.install: false, the Gateway API CRDs."""
    needed = required_crds(config)
    if config.istio.install or not needed:
        return
    try:
        check_required_crds(config, crd_versions(config, needed))
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None


def warn_about_gateway_placement(config: StackConfig, placement: GatewayPlacement) -> None:
    """An adopted Istio (istio.install: false) with NodePorts: a warning for each node of gateway.nodes
    that runs no ready gateway pod, which with externalTrafficPolicy Local drops what HAProxy sends it.
    A warning, not an error: pods come and go, and the stack does not place them itself."""
    if config.istio.install or config.gateway.service_type != "NodePort" or config.kubernetes.render_yaml_to_directory:
        return
    try:
        seen = placement(config)
    except ConfigError as error:
        pulumi.log.warn(str(error))
        return
    if seen is None:
        return
    nodes, pods = seen
    for problem in nodes_without_ready_gateway_pod(config, nodes, pods):
        consequence = (
            "its NodePorts drop HAProxy's traffic (externalTrafficPolicy: Local) and HAProxy marks it DOWN"
            if config.gateway.external_traffic_policy == "Local"
            else "its NodePorts forward to other nodes' pods (externalTrafficPolicy: Cluster)"
        )
        pulumi.log.warn(f"{PROJECT}:gateway.nodes: {problem}: {consequence}")


def build(
    crd_versions: CrdVersions = cluster_crd_versions,
    gateway_placement: GatewayPlacement = cluster_gateway_placement,
    project_dir: Path | None = None,
) -> SourceIpEdge:
    """`crd_versions` reads the cluster's CRDs and `gateway_placement` its nodes and gateway pods; the
    offline render and the tests pass their own. `project_dir`: see read_stack_config."""
    config, secrets = read_stack_config(project_dir)
    check_cluster(config, crd_versions)
    warn_about_gateway_placement(config, gateway_placement)
    args: SourceIpEdgeArgs = {"config": config, "ssh_private_key": secrets["ssh_private_key"]}
    if "vrrp_password" in secrets:
        args["vrrp_password"] = secrets["vrrp_password"]
    return SourceIpEdge("edge", args)
