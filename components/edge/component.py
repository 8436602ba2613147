"""SourceIpEdge: the whole edge, wired in the order that never drops a visitor."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.config import StackConfig
from components.edge.outputs import stack_outputs
from components.haproxy_host.component import HAProxyHost
from components.haproxy_host.haproxy_cfg import render_haproxy_config
from components.haproxy_host.keepalived_conf import render_keepalived_config
from components.istio_mesh.component import IstioMesh
from components.istio_objects import uses_gateway_api
from components.proxy_protocol.component import ProxyProtocol
from components.source_ip_policy.component import SourceIpPolicy


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
        # 1. Istio's CRDs and istiod, 2. the gateway accepts PROXY (lenient first when strict is
        # false), 3. the gateway and its pods, which start with step 2 in place (IstioMesh's
        # before_gateway; for an adopted gateway, ProxyProtocol's roll), 4. HAProxy starts
        # sending PROXY, 5. policies on the real client address (a Gateway API gateway's allow and
        # deny lists before step 4: see SourceIpPolicyArgs).

        def accept_proxy(control_plane):
            self.proxy_protocol = ProxyProtocol(
                f"{name}-proxy-protocol",
                {"config": config, "provider": provider, "control_plane": control_plane},
                pulumi.ResourceOptions(parent=self),
            )
            return [self.proxy_protocol]

        self.mesh = IstioMesh(
            f"{name}-mesh",
            {"config": config, "provider": provider, "before_gateway": accept_proxy},
            pulumi.ResourceOptions(parent=self),
        )
        self.haproxy_config = haproxy_config = render_haproxy_config(config)
        gateway_api = uses_gateway_api(config)
        policy_args = {"config": config, "provider": provider, "policies_after": [self.mesh, self.proxy_protocol]}
        # A Gateway API gateway's pods get no traffic before HAProxy moves to them: its allow and
        # deny policies go in first, and HAProxy waits for them. A chart gateway serves its clients
        # directly until HAProxy sends PROXY: its policies go in after HAProxy (DESIGN's order).
        self.policy = (
            SourceIpPolicy(f"{name}-policy", policy_args, pulumi.ResourceOptions(parent=self)) if gateway_api else None
        )
        self.hosts = [
            HAProxyHost(
                f"{name}-{host.name}",
                {
                    "host": host,
                    "ssh_private_key": args["ssh_private_key"],
                    "haproxy_config": haproxy_config,
                    "after": [self.mesh, self.proxy_protocol, *(self.policy.policies if self.policy else [])],
                    **(
                        {
                            "vip": config.haproxy.vip,
                            "keepalived_config": render_keepalived_config(config, host),
                            "vrrp_password": args["vrrp_password"],
                        }
                        if config.haproxy.vip
                        else {}
                    ),
                },
                pulumi.ResourceOptions(parent=self),
            )
            for host in config.haproxy.hosts
        ]
        if self.policy is None:
            policy_args["policies_after"] = self.hosts
            self.policy = SourceIpPolicy(f"{name}-policy", policy_args, pulumi.ResourceOptions(parent=self))
        self.policy.lock_after(self.hosts)
        self.outputs = stack_outputs(config, haproxy_config)
        self.register_outputs(self.outputs)


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
