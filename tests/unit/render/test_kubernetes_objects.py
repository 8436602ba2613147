"""The pure Kubernetes builders: EnvoyFilter, gateway ProxyConfig and roll hash, policies and the
trusted-peer lock, Helm values."""

from __future__ import annotations

import json

from components.istio_gateway.chart import gateway_release
from components.istio_mesh.releases import control_plane_releases
from components.proxy_protocol.envoy_filter import (
    PROXY_CONFIG_ANNOTATION,
    PROXY_PROTOCOL_FILTER,
    PROXY_PROTOCOL_TYPE,
    ROLL_ANNOTATION,
    envoy_filter,
    gateway_deployment_patch,
    gateway_pod_annotations,
    gateway_topology,
    proxy_protocol_hash,
)
from components.source_ip_policy.policies import authorization_policies
from components.trusted_peer_lock.envoy_filter import NETWORK_RBAC_TYPE, trusted_peer_filter
from tests.unit.conftest import make_config


def _native(raw):
    raw["proxyProtocol"] = {"mode": "native", "strict": True}


def _inserts(config):
    """The EnvoyFilter's patches after the first, which removes every proxy_protocol filter."""
    return envoy_filter(config)["spec"]["configPatches"][1:]


def test_envoy_filter_first_removes_every_proxy_protocol_filter_of_the_gateway():
    # Istio's native parser included, which the pods always carry: the EnvoyFilter owns the filters.
    first = envoy_filter(make_config())["spec"]["configPatches"][0]
    assert first == {
        "applyTo": "LISTENER_FILTER",
        "match": {"context": "GATEWAY", "listener": {"listenerFilter": PROXY_PROTOCOL_FILTER}},
        "patch": {"operation": "REMOVE"},
    }


def test_envoy_filter_inserts_typed_proxy_protocol_first_on_each_haproxy_port():
    spec = envoy_filter(make_config())["spec"]
    assert spec["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
    ports = []
    for patch in spec["configPatches"][1:]:
        assert patch["applyTo"] == "LISTENER_FILTER"
        assert patch["match"]["context"] == "GATEWAY"
        assert patch["patch"]["operation"] == "INSERT_FIRST"
        value = patch["patch"]["value"]
        assert value["name"] == "envoy.filters.listener.proxy_protocol"
        assert value["typed_config"]["@type"] == PROXY_PROTOCOL_TYPE
        assert "allow_requests_without_proxy_protocol" not in value["typed_config"]
        ports.append(patch["match"]["listener"]["portNumber"])
    assert ports == [80, 443]


def test_envoy_filter_matches_container_ports_not_node_ports():
    config = make_config(lambda r: r["gateway"].update(targetPorts={"http": 8080, "https": 8443}))
    ports = [p["match"]["listener"]["portNumber"] for p in _inserts(config)]
    assert ports == [8080, 8443]


def test_envoy_filter_is_scoped_to_the_ports_haproxy_sends_to():
    config = make_config(
        lambda r: r["haproxy"].update(frontends=[{"name": "tls", "bind": ":443", "gatewayPort": "https"}])
    )
    ports = [p["match"]["listener"]["portNumber"] for p in _inserts(config)]
    assert ports == [443]


def test_lenient_mode_allows_connections_without_a_header():
    config = make_config(lambda r: r["proxyProtocol"].update(strict=False))
    for patch in _inserts(config):
        assert patch["patch"]["value"]["typed_config"]["allow_requests_without_proxy_protocol"] is True


def test_native_mode_has_no_envoy_filter():
    assert envoy_filter(make_config(_native)) is None


def test_gateway_pods_carry_the_native_parser_in_both_modes():
    # So a mode switch never changes the pods' ProxyConfig (read at pod start): no roll, during
    # which old and new pods would parse differently. The EnvoyFilter replaces it in its mode.
    for config in (make_config(), make_config(_native)):
        assert gateway_topology(config) == {"numTrustedProxies": 0, "proxyProtocol": {}}
        annotation = json.loads(gateway_pod_annotations(config)[PROXY_CONFIG_ANNOTATION])
        assert annotation == {"gatewayTopology": {"numTrustedProxies": 0, "proxyProtocol": {}}}
    assert gateway_pod_annotations(make_config()) == gateway_pod_annotations(make_config(_native))


def test_istio_without_the_native_field_gets_no_native_parser():
    old = make_config(lambda r: r["istio"].update(version="1.18.7"))
    assert gateway_topology(old) == {"numTrustedProxies": 0}


def test_istiod_values_carry_gateway_topology_and_gateway_is_a_pinned_nodeport():
    base, istiod = control_plane_releases(make_config(_native))
    gateway = gateway_release(make_config(_native))
    assert [r.chart for r in (base, istiod, gateway)] == ["base", "istiod", "gateway"]
    assert {r.version for r in (base, istiod, gateway)} == {"1.31.4"}
    assert istiod.values["meshConfig"]["defaultConfig"]["gatewayTopology"] == {
        "numTrustedProxies": 0,
        "proxyProtocol": {},
    }
    # The mesh-wide default (other gateways of the mesh) keeps following the mode.
    _, envoyfilter_istiod = control_plane_releases(make_config())
    assert envoyfilter_istiod.values["meshConfig"]["defaultConfig"]["gatewayTopology"] == {"numTrustedProxies": 0}
    service = gateway.values["service"]
    assert service["type"] == "NodePort" and service["externalTrafficPolicy"] == "Local"
    assert {p["name"]: (p["targetPort"], p["nodePort"]) for p in service["ports"]} == {
        "status-port": (15021, 30021),
        "http2": (80, 30080),
        "https": (443, 30443),
    }
    assert gateway.values["labels"] == {"istio": "ingressgateway"}
    assert ROLL_ANNOTATION in gateway.values["podAnnotations"]
    assert PROXY_CONFIG_ANNOTATION in gateway.values["podAnnotations"]


def test_adopted_istio_installs_nothing_and_patches_the_gateway_pods():
    config = make_config(lambda r: r["istio"].update(install=False))
    assert control_plane_releases(config) == [] and gateway_release(config) is None
    patch = gateway_deployment_patch(config)
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    assert patch["metadata"] == {"name": "istio-ingressgateway", "namespace": "istio-system"}
    assert json.loads(annotations[PROXY_CONFIG_ANNOTATION]) == {
        "gatewayTopology": {"numTrustedProxies": 0, "proxyProtocol": {}}
    }
    assert gateway_deployment_patch(make_config()) is None


def test_roll_hash_changes_with_the_pods_proxy_config_only():
    base = proxy_protocol_hash(make_config())
    assert base == proxy_protocol_hash(make_config())
    # The mode and strictness live in the EnvoyFilter, which istiod pushes to running pods.
    assert base == proxy_protocol_hash(make_config(_native))
    assert base == proxy_protocol_hash(make_config(lambda r: r["proxyProtocol"].update(strict=False)))
    assert base != proxy_protocol_hash(
        make_config(lambda r: r["istio"].update(numTrustedProxies=1, httpProxiesInFront=True))
    )
    assert base == proxy_protocol_hash(make_config(lambda r: r["access"].update(allow=["192.0.2.0/24"])))
    assert gateway_pod_annotations(make_config())[ROLL_ANNOTATION] == base


def test_policies_use_remote_ip_blocks_on_the_gateway():
    config = make_config(
        lambda r: r.update(access={"allow": ["198.51.100.0/24", "2001:db8::/32"], "deny": ["198.51.100.66/32"]})
    )
    deny, allow = authorization_policies(config)
    for policy in (deny, allow):
        assert policy["apiVersion"] == "security.istio.io/v1"
        assert policy["metadata"]["namespace"] == "istio-system"
        assert policy["spec"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
        source = policy["spec"]["rules"][0]["from"][0]["source"]
        assert set(source) == {"remoteIpBlocks"}
        # Workload-wide: RBAC's destination port after PROXY is HAProxy's bind port, not the listener.
        assert [set(rule) for rule in policy["spec"]["rules"]] == [{"from"}]
    assert deny["spec"]["action"] == "DENY"
    assert deny["spec"]["rules"][0]["from"][0]["source"]["remoteIpBlocks"] == ["198.51.100.66/32"]
    assert allow["spec"]["action"] == "ALLOW"
    assert allow["spec"]["rules"][0]["from"][0]["source"]["remoteIpBlocks"] == ["198.51.100.0/24", "2001:db8::/32"]


def test_empty_allow_list_creates_no_allow_policy():
    assert authorization_policies(make_config()) == []
    assert trusted_peer_filter(make_config()) is None


def _with_peers(*peers, frontends=None, target_ports=None, native=False):
    def mutate(raw):
        raw["access"].update(trustedPeers=list(peers))
        if frontends:
            raw["haproxy"]["frontends"] = frontends
        if target_ports:
            raw["gateway"]["targetPorts"] = target_ports
        if native:
            _native(raw)

    return mutate


TLS_ONLY = [{"name": "tls", "bind": ":443", "gatewayPort": "https"}]


def test_trusted_peers_lock_denies_any_other_direct_peer():
    config = make_config(_with_peers("203.0.113.10/32", "2001:db8:21::/64"))
    assert authorization_policies(config) == []  # the lock is not an AuthorizationPolicy (see below)
    lock = trusted_peer_filter(config)
    assert lock["kind"] == "EnvoyFilter"
    assert lock["metadata"] == {"name": "istio-ingressgateway-trusted-peers", "namespace": "istio-system"}
    assert lock["spec"]["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
    for patch in lock["spec"]["configPatches"]:
        assert patch["applyTo"] == "NETWORK_FILTER" and patch["patch"]["operation"] == "INSERT_FIRST"
        value = patch["patch"]["value"]
        assert value["name"] == "envoy.filters.network.rbac"
        rules = value["typed_config"]["rules"]
        assert value["typed_config"]["@type"] == NETWORK_RBAC_TYPE
        assert rules["action"] == "DENY"
        (policy,) = rules["policies"].values()
        assert policy["permissions"] == [{"any": True}]
        assert policy["principals"] == [
            {
                "not_id": {
                    "or_ids": {
                        "ids": [
                            {"direct_remote_ip": {"address_prefix": "203.0.113.10", "prefix_len": 32}},
                            {"direct_remote_ip": {"address_prefix": "2001:db8:21::", "prefix_len": 64}},
                        ]
                    }
                }
            }
        ]


def _lock_ports(config):
    return [p["match"]["listener"]["portNumber"] for p in trusted_peer_filter(config)["spec"]["configPatches"]]


def test_trusted_peers_lock_is_scoped_to_the_listeners_haproxy_sends_to():
    # By the port the listener is bound to (EnvoyFilter match), not by an AuthorizationPolicy's
    # `ports`: RBAC reads the destination port from the PROXY header, which a forger chooses.
    assert _lock_ports(make_config(_with_peers("203.0.113.10/32"))) == [80, 443]
    tls_only = make_config(_with_peers("203.0.113.10/32", frontends=TLS_ONLY))
    assert _lock_ports(tls_only) == [443]  # port 80 parses no PROXY header: nothing to forge there
    old_chart = make_config(_with_peers("203.0.113.10/32", target_ports={"http": 8080, "https": 8443}))
    assert _lock_ports(old_chart) == [8080, 8443]


def test_trusted_peers_lock_in_native_mode_covers_every_port_of_the_gateway_service():
    # The native field parses PROXY on every listener, so every port the Service exposes is forgeable.
    tls_only_native = make_config(_with_peers("203.0.113.10/32", frontends=TLS_ONLY, native=True))
    assert _lock_ports(tls_only_native) == [80, 443]


def _remote_ip_blocks(config, suffix: str) -> list[str]:
    policy = next(p for p in authorization_policies(config) if p["metadata"]["name"].endswith(suffix))
    return policy["spec"]["rules"][0]["from"][0]["source"]["remoteIpBlocks"]


def test_adjacent_and_overlapping_networks_are_merged_allow_and_deny_separately():
    config = make_config(
        lambda r: r.update(
            access={
                "allow": [
                    "198.51.100.0/25",
                    "198.51.100.128/25",
                    "198.51.100.7/32",
                    "2001:db8::/33",
                    "2001:db8:8000::/33",
                ],
                "deny": ["203.0.113.0/25", "203.0.113.128/26", "203.0.113.192/26", "198.51.100.66/32"],
            }
        )
    )
    assert _remote_ip_blocks(config, "allow") == ["198.51.100.0/24", "2001:db8::/32"]
    # Never merged with the allow list: 198.51.100.66 stays a DENY inside an allowed /24.
    assert _remote_ip_blocks(config, "deny") == ["198.51.100.66/32", "203.0.113.0/24"]
