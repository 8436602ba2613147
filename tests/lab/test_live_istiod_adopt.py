"""istio.install: false: the stack adopts an Istio the lab installed outside it (a real
control plane). Helm installs base, istiod and the gateway chart from the lab's repository into the
lab-test control plane, as a platform team would have; the stack then only patches the gateway
Deployment's pod annotations (its ProxyConfig, which rolls the pods), adds its EnvoyFilters and
AuthorizationPolicies, and moves HAProxy; destroy takes back exactly that and leaves the adopted
Istio running. The earlier files' stack is destroyed first and this file leaves it destroyed;
files after it converge their own.
"""

from __future__ import annotations

import json

from pulumi import automation as auto

from hack.lab import gateway_xds
from tests.lab.conftest import STACK_NAME
from tests.lab.test_control_plane import helm_for

NAMESPACE = "istio-system"
GATEWAY = "istio-ingressgateway"
RELEASES = [("istio-base", "base"), ("istiod", "istiod"), (GATEWAY, "gateway")]


def _gateway_deployment(lab) -> dict:
    return lab.kube_json("deployment", "-n", NAMESPACE, GATEWAY)


def test_the_stack_adopts_an_istio_installed_outside_it_and_gives_it_back(edge, tmp_path) -> None:
    lab, stack = edge.lab, edge.stack
    stack.destroy(color="never", on_output=edge.collect)
    cp = json.loads(lab.control_plane.read_text())
    helm = helm_for(cp, tmp_path / "helm")
    pinned = lab.gateway_service["nodePorts"]
    installed = []
    try:
        for release, chart in RELEASES:
            extra = []
            if chart == "gateway":
                extra = [
                    "--set",
                    "service.type=NodePort",
                    "--set",
                    "service.externalTrafficPolicy=Local",
                    "--set",
                    f"service.ports[0].name=status-port,service.ports[0].port=15021,service.ports[0].targetPort=15021,service.ports[0].nodePort={pinned['status']}",
                    "--set",
                    f"service.ports[1].name=http2,service.ports[1].port=80,service.ports[1].targetPort=80,service.ports[1].nodePort={pinned['http']}",
                    "--set",
                    f"service.ports[2].name=https,service.ports[2].port=443,service.ports[2].targetPort=443,service.ports[2].nodePort={pinned['https']}",
                ]
            done = helm(
                "install",
                release,
                chart,
                "--repo",
                cp["chartRepository"],
                "--version",
                cp["chartVersion"],
                "--namespace",
                NAMESPACE,
                *extra,
                "--wait",
                "--timeout",
                "300s",
            )
            assert done.returncode == 0, f"helm install {release}:\n{done.stdout}{done.stderr}"
            installed.append(release)
        untouched = _gateway_deployment(lab)["spec"]["template"]["metadata"].get("annotations", {})
        assert "proxy.istio.io/config" not in untouched

        stack.set_config("source-ip-edge:istio.install", auto.ConfigValue("false"), path=True)
        result = edge.up(stack)
        assert result.summary.result == "succeeded"
        types = {r["type"] for r in stack.export_stack().deployment["resources"]}
        assert "kubernetes:helm.sh/v3:Release" not in types and "kubernetes:apps/v1:DeploymentPatch" in types
        annotations = _gateway_deployment(lab)["spec"]["template"]["metadata"]["annotations"]
        assert "gatewayTopology" in annotations["proxy.istio.io/config"], annotations
        answer = gateway_xds.ask(lab, STACK_NAME, live=True)
        assert answer.returncode == 0, answer.output[-3000:]
        for visitor in lab.visitors:
            assert lab.seen_by_gateway(visitor, "http") == visitor.address, visitor

        stack.destroy(color="never", on_output=edge.collect)
        # The adopted Istio is as it was: releases, istiod, the gateway without our annotations.
        listed = helm("list", "--namespace", NAMESPACE, "-o", "json")
        assert {r["name"] for r in json.loads(listed.stdout)} == {name for name, _ in RELEASES}
        annotations = _gateway_deployment(lab)["spec"]["template"]["metadata"].get("annotations", {})
        assert "proxy.istio.io/config" not in annotations and "source-ip-edge/proxy-protocol-hash" not in annotations
        assert not lab.kube_json("envoyfilters.networking.istio.io", "-n", NAMESPACE)["items"]
        assert not lab.kube_json("authorizationpolicies.security.istio.io", "-n", NAMESPACE)["items"]
    finally:
        stack.set_config("source-ip-edge:istio.install", auto.ConfigValue("true"), path=True)
        for release in reversed(installed):
            helm("uninstall", release, "--namespace", NAMESPACE, "--wait", "--timeout", "120s")
