"""The pure parts of the lab's checks on its API server: the gateway Service's NodePorts against the
pinned ones (hack/lab/prove.py), and an object exported for istioctl without the server's bookkeeping
(hack/lab/export_objects.py)."""

from __future__ import annotations

from hack.lab.export_objects import as_manifest
from hack.lab.prove import node_port_rows

PINNED = {"http": 30080, "https": 30443, "status": 30021}


def _ports(http: int = 30080, https: int = 30443, status: int = 30021) -> list[dict]:
    # As the gateway chart's Service carries them (components/istio_mesh/releases.py gateway_values).
    return [
        {"name": "status-port", "port": 15021, "targetPort": 15021, "nodePort": status, "protocol": "TCP"},
        {"name": "http2", "port": 80, "targetPort": 80, "nodePort": http, "protocol": "TCP"},
        {"name": "https", "port": 443, "targetPort": 443, "nodePort": https, "protocol": "TCP"},
    ]


def test_pinned_node_ports_match() -> None:
    rows, problems = node_port_rows(_ports(), PINNED)
    assert problems == []
    assert [(row[1], row[3], row[5]) for row in rows] == [
        (15021, 30021, "yes"),
        (80, 30080, "yes"),
        (443, 30443, "yes"),
    ]


def test_a_node_port_kubernetes_picked_is_a_mismatch() -> None:
    rows, problems = node_port_rows(_ports(https=31234), PINNED)
    assert [row[5] for row in rows] == ["yes", "yes", "NO"]
    assert problems == ["port 443 (https) has NodePort 31234, pinned 30443"]


def test_a_missing_port_is_a_problem() -> None:
    _, problems = node_port_rows(_ports()[:2], PINNED)
    assert problems == ["no port for https (pinned NodePort 30443)"]


def test_exported_object_keeps_what_was_applied_and_drops_the_servers_fields() -> None:
    item = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            "name": "istio-ingressgateway-deny",
            "namespace": "istio-system",
            "labels": {"a": "b"},
            "uid": "0f3c",
            "resourceVersion": "812",
            "generation": 1,
            "creationTimestamp": "2026-11-25T17:00:00Z",
            "managedFields": [{"manager": "pulumi-kubernetes"}],
        },
        "spec": {"action": "DENY", "rules": [{"from": [{"source": {"remoteIpBlocks": ["198.51.100.66/32"]}}]}]},
        "status": {"validationMessages": []},
    }
    assert as_manifest(item) == {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "istio-ingressgateway-deny", "namespace": "istio-system", "labels": {"a": "b"}},
        "spec": item["spec"],
    }
