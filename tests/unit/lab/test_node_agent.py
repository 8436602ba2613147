"""The lab node agent's kube-proxy rules (hack/lab/node_agent.py): NodePort traffic goes only where
kube-proxy would send it; with externalTrafficPolicy Local never to another node or a pod that is
not ready, and is dropped when the node has no ready local pod."""

from __future__ import annotations

from kubernetes import client

from hack.lab.node_agent import CLUSTER_MARK, nodeport_rules

NODE, NODE_IP = "lab-node-1", "192.0.2.50"


def _service(policy: str = "Local", kind: str = "NodePort") -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name="gw", namespace="istio-system"),
        spec=client.V1ServiceSpec(
            type=kind,
            external_traffic_policy=policy,
            ports=[client.V1ServicePort(name="http", port=80, node_port=30080, protocol="TCP")],
        ),
    )


def _slice(*endpoints: tuple[str, str, bool]) -> client.V1EndpointSlice:
    return client.V1EndpointSlice(
        address_type="IPv4",
        metadata=client.V1ObjectMeta(
            name="gw-abc", namespace="istio-system", labels={"kubernetes.io/service-name": "gw"}
        ),
        ports=[client.DiscoveryV1EndpointPort(name="http", port=8080)],
        endpoints=[
            client.V1Endpoint(addresses=[ip], node_name=node, conditions=client.V1EndpointConditions(ready=ready))
            for ip, node, ready in endpoints
        ],
    )


def test_local_goes_to_the_ready_local_pod_keeping_the_client_address() -> None:
    dnat, drop = nodeport_rules(
        [_service()], [_slice(("10.0.0.5", NODE, True), ("10.0.0.6", "lab-node-2", True))], NODE, NODE_IP
    )
    assert dnat == [f"ip daddr {NODE_IP} tcp dport 30080 dnat ip to 10.0.0.5:8080"]
    assert drop == []
    assert CLUSTER_MARK not in dnat[0]  # no masquerade: the pod sees the client's address


def test_local_without_a_ready_local_pod_is_dropped() -> None:
    for endpoints in [(), (("10.0.0.6", "lab-node-2", True),), (("10.0.0.5", NODE, False),)]:
        dnat, drop = nodeport_rules([_service()], [_slice(*endpoints)], NODE, NODE_IP)
        assert dnat == [], endpoints
        assert drop == [f"ip daddr {NODE_IP} tcp dport 30080 drop"], endpoints


def test_cluster_goes_to_any_ready_pod_masqueraded() -> None:
    dnat, drop = nodeport_rules(
        [_service("Cluster")],
        [_slice(("10.0.0.5", NODE, False), ("10.0.0.6", "lab-node-2", True))],
        NODE,
        NODE_IP,
    )
    assert dnat == [f"ip daddr {NODE_IP} tcp dport 30080 meta mark set {CLUSTER_MARK} dnat ip to 10.0.0.6:8080"]
    assert drop == []


def test_other_service_types_get_no_rules() -> None:
    assert nodeport_rules([_service(kind="ClusterIP")], [_slice(("10.0.0.5", NODE, True))], NODE, NODE_IP) == ([], [])
