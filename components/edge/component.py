"""SourceIpEdge: the whole edge, wired in the order that never drops a visitor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.config import SshHost, StackConfig
from components.edge.outputs import stack_outputs
from components.haproxy_host.access_list import EdgeList, render_edge_lists
from components.haproxy_host.component import HAProxyHost, HAProxyHostArgs
from components.haproxy_host.haproxy_cfg import render_haproxy_config
from components.haproxy_host.keepalived_conf import render_keepalived_config
from components.istio_gateway.component import IstioGateway
from components.istio_mesh.component import IstioMesh
from components.istio_objects import uses_gateway_api
from components.proxy_protocol.component import ProxyProtocol
from components.source_ip_policy.component import SourceIpPolicy, SourceIpPolicyArgs
from components.trusted_peer_lock.component import TrustedPeerLock


class SourceIpEdgeArgs(TypedDict):
    config: StackConfig
    """The validated stack configuration."""
    ssh_private_key: pulumi.Input[str]
    """SSH key for the HAProxy hosts (secret)."""
    vrrp_password: NotRequired[pulumi.Input[str]]
    """The VRRP password of haproxy.vip (secret); present exactly when the VIP is configured."""


class SourceIpEdge(pulumi.ComponentResource):
    outputs: dict[str, Any]
    """The stack outputs (see stack_outputs.py for the contract)."""
    haproxy_config: str
    """The haproxy.cfg every host gets."""

    def __init__(self, name: str, args: SourceIpEdgeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("source-ip-edge:edge:SourceIpEdge", name, {}, opts)
        config = args["config"]
        provider = _kubernetes_provider(name, config, self)
        child = pulumi.ResourceOptions(parent=self)
        # The order that never drops a visitor, each step a dependency of the next:
        # 1. Istio's CRDs and istiod.
        self.mesh = IstioMesh(f"{name}-mesh", {"config": config, "provider": provider}, child)
        # 2. The gateway accepts PROXY (lenient first when strict is false); for an adopted gateway
        #    this also rolls its pods.
        self.proxy_protocol = ProxyProtocol(
            f"{name}-proxy-protocol",
            {"config": config, "provider": provider, "control_plane": self.mesh.control_plane},
            child,
        )
        # 3. The gateway, whose pods start with step 2 in place.
        self.gateway = IstioGateway(
            f"{name}-gateway",
            {
                "config": config,
                "provider": provider,
                "after": [*self.mesh.control_plane, *self.proxy_protocol.resources],
                "previous_parent": self.mesh,
            },
            child,
        )
        gateway_ready: list[pulumi.Resource] = [self.mesh, self.proxy_protocol, self.gateway]
        # 4. HAProxy starts sending PROXY, 5. the policies on the real client address. A Gateway API
        #    gateway's pods get no traffic before HAProxy moves to them: its allow and deny lists
        #    go in first and HAProxy waits for them. A chart gateway serves its clients directly
        #    until HAProxy sends PROXY: its policies go in after HAProxy.
        gateway_api = uses_gateway_api(config)
        policy_args: SourceIpPolicyArgs = {"config": config, "provider": provider, "after": gateway_ready}
        self.policy = SourceIpPolicy(f"{name}-policy", policy_args, child) if gateway_api else None
        self.haproxy_config = haproxy_config = render_haproxy_config(config)
        hosts_after = [*gateway_ready, *([self.policy] if self.policy else [])]
        edge_lists = render_edge_lists(config.access)  # once: every host gets the same files
        self.hosts = [
            HAProxyHost(
                f"{name}-{host.name}", _host_args(config, host, haproxy_config, edge_lists, hosts_after, args), child
            )
            for host in config.haproxy.hosts
        ]
        if self.policy is None:
            policy_args["after"] = self.hosts
            self.policy = SourceIpPolicy(f"{name}-policy", policy_args, child)
        # 6. The trusted-peer lock, once HAProxy is the gateway's direct peer.
        self.trusted_peer_lock = TrustedPeerLock(
            f"{name}-trusted-peer-lock",
            {"config": config, "provider": provider, "after": self.hosts, "previous_parent": self.policy},
            child,
        )
        self.outputs = stack_outputs(config, haproxy_config, self.policy.names)
        self.register_outputs(self.outputs)


def _host_args(
    config: StackConfig,
    host: SshHost,
    haproxy_config: str,
    edge_lists: Sequence[EdgeList],
    after: Sequence[pulumi.Resource],
    args: SourceIpEdgeArgs,
) -> HAProxyHostArgs:
    host_args: HAProxyHostArgs = {
        "host": host,
        "ssh_private_key": args["ssh_private_key"],
        "haproxy_config": haproxy_config,
        "after": after,
        "access_lists": edge_lists,
    }
    if config.haproxy.vip:
        host_args["vip"] = config.haproxy.vip
        host_args["keepalived_config"] = render_keepalived_config(config, host)
        host_args["vrrp_password"] = args["vrrp_password"]
    return host_args


def _kubernetes_provider(name: str, config: StackConfig, parent: pulumi.Resource) -> k8s.Provider | None:
    settings = config.kubernetes
    if settings.context is None and settings.render_yaml_to_directory is None:
        return None
    return k8s.Provider(
        f"{name}-kubernetes",
        context=settings.context,
        render_yaml_to_directory=settings.render_yaml_to_directory,
        opts=pulumi.ResourceOptions(parent=parent),
    )
