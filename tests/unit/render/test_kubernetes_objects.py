"""The pure Kubernetes builders: EnvoyFilter, gateway ProxyConfig and roll hash, policies, Helm values."""

from __future__ import annotations

import json

from source_ip_edge.render.source_ip_policy import authorization_policies
from source_ip_edge.render.istio_mesh import istio_releases
from source_ip_edge.render.proxy_protocol import (
    PROXY_CONFIG_ANNOTATION,
    PROXY_PROTOCOL_TYPE,
    ROLL_ANNOTATION,
    envoy_filter,
    gateway_deployment_patch,
    gateway_pod_annotations,
    gateway_topology,
    proxy_protocol_hash,
)

from tests.unit.conftest import make_config


def _native(raw):
    raw["proxyProtocol"] = {"mode": "native", "strict": True}


def test_envoy_filter_inserts_typed_proxy_protocol_first_on_each_haproxy_port():
    spec = envoy_filter(make_config())["spec"]
    assert spec["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
    ports = []
    for patch in spec["configPatches"]:
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
    ports = [p["match"]["listener"]["portNumber"] for p in envoy_filter(config)["spec"]["configPatches"]]
    assert ports == [8080, 8443]


def test_envoy_filter_is_scoped_to_the_ports_haproxy_sends_to():
    config = make_config(lambda r: r["haproxy"].update(frontends=[{"name": "tls", "bind": ":443", "gatewayPort": "https"}]))
    ports = [p["match"]["listener"]["portNumber"] for p in envoy_filter(config)["spec"]["configPatches"]]
    assert ports == [443]


def test_lenient_mode_allows_connections_without_a_header():
    config = make_config(lambda r: r["proxyProtocol"].update(strict=False))
    for patch in envoy_filter(config)["spec"]["configPatches"]:
        assert patch["patch"]["value"]["typed_config"]["allow_requests_without_proxy_protocol"] is True


def test_native_mode_has_no_envoy_filter_and_sets_gateway_topology():
    config = make_config(_native)
    assert envoy_filter(config) is None
    assert gateway_topology(config) == {"numTrustedProxies": 0, "proxyProtocol": {}}
    assert gateway_topology(make_config()) == {"numTrustedProxies": 0}


def test_istiod_values_carry_gateway_topology_and_gateway_is_a_pinned_nodeport():
    base, istiod, gateway = istio_releases(make_config(_native))
    assert [r.chart for r in (base, istiod, gateway)] == ["base", "istiod", "gateway"]
    assert {r.version for r in (base, istiod, gateway)} == {"1.31.4"}
    assert istiod.values["meshConfig"]["defaultConfig"]["gatewayTopology"] == {"numTrustedProxies": 0, "proxyProtocol": {}}
    service = gateway.values["service"]
    assert service["type"] == "NodePort" and service["externalTrafficPolicy"] == "Local"
    assert {p["name"]: (p["targetPort"], p["nodePort"]) for p in service["ports"]} == {
        "status-port": (15021, 30021),
        "http2": (80, 30080),
        "https": (443, 30443),
    }
    assert gateway.values["labels"] == {"istio": "ingressgateway"}
    assert ROLL_ANNOTATION in gateway.values["podAnnotations"]


def test_adopted_istio_installs_nothing_and_patches_the_gateway_pods():
    config = make_config(lambda r: r["istio"].update(install=False))
    assert istio_releases(config) == []
    patch = gateway_deployment_patch(config)
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    assert patch["metadata"] == {"name": "istio-ingressgateway", "namespace": "istio-system"}
    assert json.loads(annotations[PROXY_CONFIG_ANNOTATION]) == {"gatewayTopology": {"numTrustedProxies": 0}}
    assert gateway_deployment_patch(make_config()) is None


def test_roll_hash_changes_with_the_proxy_protocol_setup_only():
    base = proxy_protocol_hash(make_config())
    assert base == proxy_protocol_hash(make_config())
    assert base != proxy_protocol_hash(make_config(_native))
    assert base != proxy_protocol_hash(make_config(lambda r: r["proxyProtocol"].update(strict=False)))
    assert base != proxy_protocol_hash(make_config(lambda r: r["istio"].update(numTrustedProxies=1, httpProxiesInFront=True)))
    assert base == proxy_protocol_hash(make_config(lambda r: r["access"].update(allow=["192.0.2.0/24"])))
    assert gateway_pod_annotations(make_config())[ROLL_ANNOTATION] == base


def test_policies_use_remote_ip_blocks_on_the_gateway():
    config = make_config(lambda r: r.update(access={"allow": ["198.51.100.0/24", "2001:db8::/32"], "deny": ["198.51.100.66/32"]}))
    deny, allow = authorization_policies(config)
    for policy in (deny, allow):
        assert policy["apiVersion"] == "security.istio.io/v1"
        assert policy["metadata"]["namespace"] == "istio-system"
        assert policy["spec"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
        source = policy["spec"]["rules"][0]["from"][0]["source"]
        assert set(source) == {"remoteIpBlocks"}
    assert deny["spec"]["action"] == "DENY"
    assert deny["spec"]["rules"][0]["from"][0]["source"]["remoteIpBlocks"] == ["198.51.100.66/32"]
    assert allow["spec"]["action"] == "ALLOW"
    assert allow["spec"]["rules"][0]["from"][0]["source"]["remoteIpBlocks"] == ["198.51.100.0/24", "2001:db8::/32"]


def test_empty_allow_list_creates_no_allow_policy():
    assert authorization_policies(make_config()) == []


def test_trusted_peers_lock_denies_any_other_direct_peer():
    config = make_config(lambda r: r["access"].update(trustedPeers=["203.0.113.10/32"]))
    (lock,) = authorization_policies(config)
    assert lock["spec"]["action"] == "DENY"
    assert lock["spec"]["rules"][0]["from"][0]["source"] == {"notIpBlocks": ["203.0.113.10/32"]}
