"""The program under Pulumi mocks: components, their children, dependency edges, outputs, errors."""

from __future__ import annotations

import pulumi
import pytest

from components.config import parse_stack_config
from components.haproxy_host.access_list import render_edge_lists
from components.haproxy_host.haproxy_cfg import config_sha256, render_haproxy_config

from .conftest import valid_raw
from .program_harness import generated_private_key, run_program, unwrap_secret

COMMAND = "command:remote:Command"
RELEASE = "kubernetes:helm.sh/v3:Release"
ENVOY_FILTER = "kubernetes:networking.istio.io/v1alpha3:EnvoyFilter"
AUTHZ = "kubernetes:security.istio.io/v1:AuthorizationPolicy"
DEPLOYMENT_PATCH = "kubernetes:apps/v1:DeploymentPatch"


def _with_access(raw):
    raw["access"] = {"allow": ["198.51.100.0/24"], "deny": ["198.51.100.66/32"]}
    raw["haproxy"]["hosts"].append(dict(raw["haproxy"]["hosts"][0], name="edge-2", address="203.0.113.11"))
    return raw


@pytest.fixture(scope="module")
def envoyfilter_run():
    return run_program(_with_access(valid_raw()))


def test_components_are_typed_and_children_are_parented(envoyfilter_run):
    by_urn = {r.urn: r for r in envoyfilter_run.registrations}
    types = {r.type for r in envoyfilter_run.registrations}
    assert {
        "source-ip-edge:edge:SourceIpEdge",
        "source-ip-edge:istio:IstioMesh",
        "source-ip-edge:istio:ProxyProtocol",
        "source-ip-edge:istio:SourceIpPolicy",
        "source-ip-edge:haproxy:HAProxyHost",
    } <= types
    for registration in envoyfilter_run.registrations:
        if registration.type == "source-ip-edge:edge:SourceIpEdge":
            continue
        assert registration.parent in by_urn, f"{registration.name} is not parented to a component"
        assert registration.name.startswith("edge-"), registration.name


def test_istio_releases_install_in_order(envoyfilter_run):
    releases = envoyfilter_run.all(RELEASE)
    assert [r.inputs["chart"] for r in releases] == ["base", "istiod", "gateway"]
    assert releases[1].urn not in releases[0].dependencies
    assert releases[0].urn in releases[1].dependencies
    assert releases[1].urn in releases[2].dependencies
    assert releases[0].inputs["repositoryOpts"]["repo"] == "https://istio-release.storage.googleapis.com/charts"
    assert {r.inputs["version"] for r in releases} == {"1.31.4"}


def test_gateway_pods_start_after_the_envoy_filter_that_owns_their_proxy_filters(envoyfilter_run):
    # The pods carry Istio's native parser; without the EnvoyFilter in place a new pod would
    # parse PROXY on every listener, and next to an older EnvoyFilter it would parse it twice.
    envoy_filter = envoyfilter_run.one(ENVOY_FILTER)
    base, istiod, gateway = envoyfilter_run.all(RELEASE)
    assert istiod.urn in envoy_filter.dependencies
    assert envoy_filter.urn in gateway.dependencies
    assert gateway.urn not in envoy_filter.dependencies
    assert [p["patch"]["operation"] for p in envoy_filter.inputs["spec"]["configPatches"]] == [
        "REMOVE",
        "INSERT_FIRST",
        "INSERT_FIRST",
    ]


def test_haproxy_sends_proxy_only_after_the_gateway_accepts_it(envoyfilter_run):
    envoy_filter = envoyfilter_run.one(ENVOY_FILTER)
    for host in ("edge-1", "edge-2"):
        install = envoyfilter_run.one(COMMAND, f"-{host}-install")
        config = envoyfilter_run.one(COMMAND, f"-{host}-config")
        assert envoy_filter.urn in config.dependencies
        assert install.urn in config.dependencies
        assert envoy_filter.urn not in install.dependencies  # installing the package can start early


def test_policies_come_after_haproxy_sends_proxy(envoyfilter_run):
    policies = envoyfilter_run.all(AUTHZ)
    assert sorted(p.inputs["spec"]["action"] for p in policies) == ["ALLOW", "DENY"]
    configs = [envoyfilter_run.one(COMMAND, f"-{h}-config").urn for h in ("edge-1", "edge-2")]
    for policy in policies:
        assert set(configs) <= set(policy.dependencies)


def test_haproxy_host_commands_carry_the_config_and_pin_the_host_key(envoyfilter_run):
    config = envoyfilter_run.one(COMMAND, "-edge-1-config")
    expected = render_haproxy_config(parse_stack_config(_with_access(valid_raw())))
    assert expected in config.inputs["create"]
    assert "update" not in config.inputs  # create runs again on change; the diff shows lines once
    assert "haproxy" in config.inputs["delete"]
    _, connection = unwrap_secret(config.inputs["connection"])
    assert connection["host"] == "203.0.113.10"
    assert connection["hostKey"] == valid_raw()["haproxy"]["hosts"][0]["hostKey"]
    assert connection["user"] == "root" and connection["port"] == 22


def test_each_host_gets_its_access_lists_before_its_config_as_a_summary_and_a_secret_stdin(envoyfilter_run):
    # _with_access: an allow and a deny list, enforced at both ends by default.
    access = parse_stack_config(_with_access(valid_raw())).access
    for host in ("edge-1", "edge-2"):
        config = envoyfilter_run.one(COMMAND, f"-{host}-config")
        for edge_list in render_edge_lists(access):
            command = envoyfilter_run.one(COMMAND, f"-{host}-{edge_list.which}-list")
            assert command.urn in config.dependencies, "haproxy -c reads the list files"
            assert edge_list.summary in command.inputs["create"] and edge_list.sha256 in command.inputs["create"]
            is_secret, stdin = unwrap_secret(command.inputs["stdin"])
            assert is_secret and stdin == edge_list.text, "the list on stdin, shown as [secret] by a preview"
            assert edge_list.path in command.inputs["delete"]
            assert f"src -f {edge_list.path}" in config.inputs["create"]


def test_a_replaced_config_command_restores_before_it_applies_again(envoyfilter_run):
    # A replaced config command must not run its restore after the new apply.
    assert envoyfilter_run.one(COMMAND, "-edge-1-config").delete_before_replace is True


def test_private_key_is_secret_in_the_connection(envoyfilter_run):
    config = envoyfilter_run.one(COMMAND, "-edge-1-config")
    # The whole connection is a secret, so state keeps it encrypted and stdout is secret too.
    is_secret, connection = unwrap_secret(config.inputs["connection"])
    assert is_secret
    assert unwrap_secret(connection["privateKey"])[1] == generated_private_key()
    for command in envoyfilter_run.all(COMMAND):
        for field in ("create", "update", "delete"):
            assert "PRIVATE KEY" not in str(command.inputs.get(field, ""))


def test_stack_outputs_contract(envoyfilter_run):
    outputs = envoyfilter_run.outputs
    assert set(outputs) >= {
        "haproxyHosts",
        "frontends",
        "gatewayBackends",
        "proxyProtocol",
        "numTrustedProxies",
        "envoyFilterName",
        "authorizationPolicies",
        "trustedPeersFilterName",
        "haproxyConfigSha256",
        "istioVersion",
    }
    assert outputs["haproxyHosts"][1] == {"name": "edge-2", "address": "203.0.113.11", "port": 22}
    assert outputs["proxyProtocol"] == {"mode": "envoyfilter", "strict": True, "version": 2}
    assert outputs["numTrustedProxies"] == 0
    assert outputs["envoyFilterName"] == "istio-system/istio-ingressgateway-proxy-protocol"
    assert outputs["authorizationPolicies"] == [
        "istio-system/istio-ingressgateway-source-ip-deny",
        "istio-system/istio-ingressgateway-source-ip-allow",
    ]
    assert outputs["trustedPeersFilterName"] is None
    assert outputs["gatewayBackends"][0] == {"address": "192.0.2.50", "http": 30080, "https": 30443, "status": 30021}
    expected_cfg = render_haproxy_config(parse_stack_config(_with_access(valid_raw())))
    assert outputs["haproxyConfigSha256"] == config_sha256(expected_cfg)
    assert outputs["istioVersion"] == "1.31.4"


def test_native_mode_makes_no_envoy_filter_and_configures_istiod():
    raw = valid_raw()
    raw["proxyProtocol"] = {"mode": "native", "strict": True}
    run = run_program(raw)
    assert run.all(ENVOY_FILTER) == []
    istiod = run.all(RELEASE)[1]
    assert istiod.inputs["values"]["meshConfig"]["defaultConfig"]["gatewayTopology"]["proxyProtocol"] == {}
    assert run.outputs["envoyFilterName"] is None
    # The gateway pods are the same in both modes: switching never rolls them.
    envoyfilter_pods = run_program(valid_raw()).all(RELEASE)[2].inputs["values"]["podAnnotations"]
    assert run.all(RELEASE)[2].inputs["values"]["podAnnotations"] == envoyfilter_pods
    # HAProxy still waits for the gateway that now reads PROXY.
    gateway = run.all(RELEASE)[2]
    assert gateway.urn in run.one(COMMAND, "-edge-1-config").dependencies


def test_adopted_istio_manages_only_our_objects_through_a_given_provider(tmp_path):
    raw = valid_raw()
    raw["istio"] = {"install": False, "version": "1.31.4"}
    raw["kubernetes"] = {"renderYamlToDirectory": str(tmp_path)}
    run = run_program(raw)
    assert run.all(RELEASE) == []
    provider = run.one("pulumi:providers:kubernetes")
    assert provider.inputs["renderYamlToDirectory"] == str(tmp_path)
    patch = run.one(DEPLOYMENT_PATCH)
    assert patch.inputs["metadata"]["name"] == "istio-ingressgateway"
    assert "proxy.istio.io/config" in patch.inputs["spec"]["template"]["metadata"]["annotations"]
    envoy_filter = run.one(ENVOY_FILTER)
    assert envoy_filter.provider.startswith(provider.urn)
    assert envoy_filter.urn in patch.dependencies


def test_trusted_peer_lock_is_an_envoy_filter_set_after_haproxy_sends_proxy():
    raw = valid_raw()
    raw["access"] = {"trustedPeers": ["203.0.113.10/32"]}
    run = run_program(raw)
    assert run.all(AUTHZ) == []
    lock = run.one(ENVOY_FILTER, "-istio-ingressgateway-trusted-peers")
    assert lock.inputs["metadata"]["name"] == "istio-ingressgateway-trusted-peers"
    assert [p["applyTo"] for p in lock.inputs["spec"]["configPatches"]] == ["NETWORK_FILTER", "NETWORK_FILTER"]
    assert run.one(COMMAND, "-edge-1-config").urn in lock.dependencies
    assert run.outputs["trustedPeersFilterName"] == "istio-system/istio-ingressgateway-trusted-peers"
    assert run.outputs["authorizationPolicies"] == []


def test_bad_config_fails_before_any_resource_with_one_line():
    raw = valid_raw()
    raw["access"] = {"allow": ["10.0.0.0/33"]}
    with pytest.raises(pulumi.RunError) as caught:
        run_program(raw)
    assert str(caught.value) == "source-ip-edge:access.allow[0]: '10.0.0.0/33' is not a CIDR"


def test_missing_private_key_is_refused():
    with pytest.raises(pulumi.RunError, match="sshPrivateKey: is required"):
        run_program(valid_raw(), ssh_private_key=None)


# Resources that earlier versions of the edge declared under another component. Each must alias
# its old parent and name, or `pulumi up` on an existing stack would delete and re-create the
# object (the gateway's Helm release: every gateway pod).
def test_moved_resources_alias_their_previous_parent_and_name():
    raw = valid_raw()
    raw["access"] = {"trustedPeers": ["203.0.113.10/32"]}
    run = run_program(raw)
    mesh = run.one("source-ip-edge:istio:IstioMesh").urn
    policy = run.one("source-ip-edge:istio:SourceIpPolicy").urn
    gateway = run.one(RELEASE, "-istio-ingressgateway")
    lock = run.one(ENVOY_FILTER, "-istio-ingressgateway-trusted-peers")
    assert gateway.aliases == [(mesh, "edge-mesh-istio-ingressgateway")]
    assert lock.aliases == [(policy, "edge-policy-istio-ingressgateway-trusted-peers")]
    assert gateway.parent != mesh and lock.parent != policy
