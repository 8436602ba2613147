"""Proves the lab's edge: each visitor's address arrives at the gateway stand-in, over HTTP and HTTPS,
through the VIP of the HA pair; which host holds the VIP, with haproxy and keepalived active on both;
that the gateway Service the stack installed in the lab's API server has the NodePorts the
config pins (HAProxy sends to those ports on the nodes, so a port Kubernetes picked would be a
dead backend on a real cluster); and that the listeners the lab's running istiod serves the
gateway's pods (asked over xDS, hack/lab/gateway_xds.py) hold what the config says.

Prints one row per HAProxy host, one per gateway Service port, one per HAProxy-fronted listener of
the live istiod and one per visitor address; exits non-zero if a unit is not active, if not exactly
one host holds the VIP, if a NodePort differs from the pinned one, if a check on the live listeners
fails, or if any address does not match.
Usage: python -m hack.lab.prove [LAB_NAME]   (kubectl of the toolchain on PATH)
"""

from __future__ import annotations

import sys
import time

from components.config import GATEWAY_SERVICE_PORTS
from hack.lab import gateway_xds
from hack.lab.labkit import Lab


def _table(header: tuple, rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())


def hosts_proof(lab: Lab) -> int:
    """One row per HAProxy host: systemd as PID 1, haproxy and keepalived active, VIP held or not."""
    # Every host starts as BACKUP: the VIP is taken once no advert came for 3 intervals (about 3.6 s).
    deadline = time.monotonic() + 10
    while len(holders := lab.vip_holders()) != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    rows, problems = [], 0
    for host in lab.hosts:
        units = lab.units_active(host, "haproxy", "keepalived")
        pid1 = lab.ssh("cat /proc/1/comm", address=host.address).stdout.strip()
        holds = "HOLDS THE VIP" if host in holders else "backup"
        rows.append((host.name, host.address, pid1, *(units + ["?", "?"])[:2], holds))
        problems += units != ["active", "active"]
    _table(("host", "address", "PID 1", "haproxy", "keepalived", f"VIP {lab.vip}"), rows)
    if len(holders) != 1:
        print(f"{len(holders)} hosts hold the VIP {lab.vip}; exactly one should", file=sys.stderr)
        problems += 1
    return problems


def node_port_rows(ports: list[dict], pinned: dict[str, int]) -> tuple[list[tuple], list[str]]:
    """The gateway Service's ports (its spec.ports) against the pinned NodePorts by role (http, https,
    status; a role is known by its Service port, GATEWAY_SERVICE_PORTS): one row per port, and the
    problems: a NodePort that differs, or a pinned role the Service has no port for."""
    role_of = {port: role for role, port in GATEWAY_SERVICE_PORTS.items()}
    rows, problems = [], []
    for port in ports:
        role = role_of.get(port["port"])
        want = pinned.get(role)
        match = want is not None and port.get("nodePort") == want
        rows.append(
            (
                port.get("name", ""),
                port["port"],
                port.get("targetPort"),
                port.get("nodePort"),
                want,
                "yes" if match else "NO",
            )
        )
        if not match:
            problems.append(
                f"port {port['port']} ({role or 'not ours'}) has NodePort {port.get('nodePort')}, pinned {want}"
            )
    for role in sorted(set(pinned) - {role_of.get(p["port"]) for p in ports}):
        problems.append(f"no port for {role} (pinned NodePort {pinned[role]})")
    return rows, problems


def node_ports_proof(lab: Lab) -> int:
    """The gateway Service in the lab's API server: its NodePorts against the pinned ones."""
    service = lab.gateway_service
    found = lab.kube_json("service", "-n", service["namespace"], service["name"])
    rows, problems = node_port_rows(found["spec"]["ports"], service["nodePorts"])
    print(
        f"gateway Service {service['namespace']}/{service['name']} ({found['spec']['type']}, "
        f"externalTrafficPolicy {found['spec'].get('externalTrafficPolicy')}) in the lab's API server:"
    )
    _table(("port", "service port", "target port", "NodePort", "pinned", "match"), rows)
    for problem in problems:
        print(f"gateway Service: {problem}", file=sys.stderr)
    return len(problems)


def live_listener_rows(facts: dict) -> list[tuple]:
    """One row per listener HAProxy sends to, from the live answer's facts: what the listener has
    against what the config says (proxy_protocol first and once with the configured strictness, XFF
    hops, remote_ip allow and deny, the peer lock) and its probes' verdicts."""
    want = facts["expected"]
    rows = []
    for listener in facts["listeners"]:
        if not listener["frontend"]:
            continue
        filters = listener["listenerFilters"]
        first_once = listener["proxyProtocolCount"] == 1 and filters[:1] == ["envoy.filters.listener.proxy_protocol"]
        strict = listener["allowRequestsWithoutProxyProtocol"] is False
        probes = [p for p in facts["probes"] if p["listener"] == listener["name"]]
        probes_ok = sum(p["allowed"] == p["wantAllowed"] and not p.get("error") for p in probes)
        rows.append(
            (
                listener["name"],
                listener["frontend"],
                f"{'first, once' if first_once else 'NO: ' + ' -> '.join(filters)}, {'strict' if strict else 'lenient'}"
                + ("" if strict == want["strict"] else " (want the other)"),
                f"{listener['xffNumTrustedHops']} (config {want['xffNumTrustedHops']})",
                "= access.allow" if listener["remoteIpAllow"] == want["allow"] else f"NO: {listener['remoteIpAllow']}",
                "= access.deny" if listener["remoteIpDeny"] == want["deny"] else f"NO: {listener['remoteIpDeny']}",
                "= trustedPeers"
                if listener["directPeersOnly"] == want["trustedPeers"]
                else f"NO: {listener['directPeersOnly']}",
                f"{probes_ok}/{len(probes)}",
            )
        )
    return rows


def live_istiod_proof(lab: Lab) -> int:
    """The listeners the lab's running istiod serves the gateway's pods (asked over xDS as a pod
    would), against the stack's config; the same checks `make gateway-test` runs offline."""
    answer = gateway_xds.ask(lab, lab.name, live=True)
    if not answer.facts:
        print(answer.output, file=sys.stderr)
        print("live istiod: no answer", file=sys.stderr)
        return 1
    print(
        f"listeners the live istiod serves the gateway pods ({', '.join(answer.facts.get('pods') or [])}), "
        "HAProxy-fronted:"
    )
    _table(
        (
            "listener",
            "frontend",
            "proxy_protocol",
            "xff_num_trusted_hops",
            "remote_ip ALLOW",
            "remote_ip DENY",
            "direct_remote_ip lock",
            "probes ok",
        ),
        live_listener_rows(answer.facts),
    )
    checks = [line for line in answer.output.splitlines() if line.startswith("check ")]
    print("; ".join(checks))
    if answer.returncode != 0:
        print(f"live istiod: checks failed: {answer.failed_checks or answer.output[-2000:]}", file=sys.stderr)
        return 1
    return 0


def envoy_saw(lines: list[str]) -> str:
    """The downstream remote address (without its port) of the access log lines of one request:
    Istio's default text format ends with DOWNSTREAM_LOCAL_ADDRESS DOWNSTREAM_REMOTE_ADDRESS
    REQUESTED_SERVER_NAME ROUTE_NAME."""
    seen = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:
            address = fields[-3]
            host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
            seen.append(host.strip("[]"))
    return ", ".join(sorted(set(seen))) or "(no log line)"


def live_traffic_rows(lab: Lab, settle_seconds: float = 30) -> list[tuple]:
    """One row per visitor address and scheme, on live traffic through HAProxy and the gateway's Envoy."""
    rows = []
    for visitor in lab.visitors:
        for scheme in ("http", "https"):
            want = "200" if visitor.allowed else ("403" if scheme == "http" else "closed")
            # Polled, bounded: until istiod has pushed the route to the backend and the backend's pod
            # is ready, Envoy answers 404 or 503; a connection HAProxy sent to a node just going DOWN
            # fails once. The verdict judged is the last one.
            deadline = time.monotonic() + settle_seconds
            while True:
                before = lab.gateway_logs()
                verdict, body = lab.visit(visitor, scheme)
                if verdict == want or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            lines: list[str] = []
            deadline = time.monotonic() + 3  # Envoy flushes its access log every second
            while not lines and time.monotonic() < deadline:
                time.sleep(0.2)
                lines = lab.access_log_since(before)
            backend = body if verdict == "200" else "-"
            envoy = envoy_saw(lines)
            ok = verdict == want and (verdict != "200" or backend == visitor.address)
            ok = ok and (envoy == visitor.address or (envoy == "(no log line)" and verdict == "closed"))
            rows.append(
                (
                    visitor.name,
                    visitor.address,
                    "VIP" if visitor.target == lab.vip else visitor.target,
                    scheme if scheme == "http" else "https (passthrough)",
                    envoy,
                    backend,
                    verdict,
                    want,
                    "yes" if ok else "NO",
                )
            )
    return rows


def live_traffic_proof(lab: Lab) -> int:
    rows = live_traffic_rows(lab)
    print("live traffic: visitor -> HAProxy (PROXY v2) -> the gateway pod's Envoy -> the echo backend:")
    _table(("visitor", "sent from", "to", "scheme", "Envoy saw", "backend saw", "verdict", "expected", "match"), rows)
    mismatches = sum(row[-1] != "yes" for row in rows)
    if mismatches:
        print(f"{mismatches} of {len(rows)} live requests did not get the expected verdict or address", file=sys.stderr)
        return 1
    print(f"all {len(rows)} live requests as expected: each address seen by Envoy, allowed or denied by its RBAC")
    return 0


def main(name: str) -> int:
    lab = Lab.load(name)
    problems = hosts_proof(lab) if lab.hosts else 0
    if lab.gateway_service:
        print()
        problems += node_ports_proof(lab)
    if lab.control_plane:
        print()
        problems += live_istiod_proof(lab)
    print()
    if lab.data_plane == "envoy":
        return 1 if live_traffic_proof(lab) or problems else 0
    rows = []
    for visitor in lab.visitors:
        http = lab.seen_by_gateway(visitor, "http")
        https = lab.seen_by_gateway(visitor, "https")
        rows.append(
            (
                visitor.name,
                visitor.address,
                "VIP" if visitor.target == lab.vip else visitor.target,
                http,
                https,
                "yes" if http == visitor.address == https else "NO",
            )
        )
    _table(("visitor", "address", "to", "gateway saw (HTTP)", "gateway saw (HTTPS)", "match"), rows)
    mismatches = sum(row[-1] != "yes" for row in rows)
    if mismatches:
        print(f"{mismatches} of {len(rows)} visitor addresses did not arrive at the gateway", file=sys.stderr)
        return 1
    print(f"all {len(rows)} visitor addresses arrived at the gateway through HAProxy (PROXY v2)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "lab"))
