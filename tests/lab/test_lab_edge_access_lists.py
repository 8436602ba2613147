"""Long access lists in the lab: a 100,000-network deny list and a 100,000-network allow list, read
from files, converge on the real HAProxy host; a visitor in the deny list is refused at the edge and
one outside it passes; a one-network change is enforced through the runtime API with no reload
(the same haproxy processes) and no request lost under load."""

from __future__ import annotations

import ipaddress
import threading
import time
from pathlib import Path

from pulumi import automation as auto

from hack.lab.labkit import load_result
from tests.lab.conftest import wait_until

DENY_FILE = "/etc/haproxy/source-ip-edge-deny.acl"


def _spread(count: int, first: str) -> list[str]:
    """`count` /32s two addresses apart (nothing merges), from `first` on: config strings only."""
    base = int(ipaddress.ip_address(first))
    return [f"{ipaddress.ip_address(base + 2 * i)}/32" for i in range(count)]


def _write(path: Path, networks: list[str]) -> None:
    path.write_text("# lab list\n" + "\n".join(networks) + "\n")


def _passes(edge, visitor) -> bool:
    return edge.lab.seen_by_gateway(visitor, "http") == visitor.address


def test_long_lists_converge_refuse_at_the_edge_and_change_without_a_reload(edge, tmp_path: Path) -> None:
    visitors = {v.address: v for v in edge.lab.visitors}
    passing, denied = visitors["198.51.100.7"], visitors["198.51.100.8"]
    deny_file, allow_file = tmp_path / "deny.txt", tmp_path / "allow.txt"
    long_deny = _spread(100_000, "10.0.0.0")
    _write(deny_file, [*long_deny, f"{denied.address}/32"])
    # Every lab visitor is allowed (IPv4 and IPv6), among 100,000 other networks.
    _write(allow_file, [*_spread(100_000, "10.128.0.0"), "198.51.100.0/24", "2001:db8:100::/48"])
    stack = edge.stack
    keys = {
        "access.denyFrom[0]": str(deny_file),
        "access.allowFrom[0]": str(allow_file),
        "access.denyAt": "both",
        "access.allowAt": "both",
    }
    for key, value in keys.items():
        stack.set_config(f"source-ip-edge:{key}", auto.ConfigValue(value), path=True)
    try:
        _converge_refuse_and_change(edge, passing, denied, deny_file, long_deny)
    finally:
        # Lists gone, back to the gateway: their files leave the host, every visitor passes.
        for key in ("access.denyFrom", "access.allowFrom", "access.denyAt", "access.allowAt"):
            stack.remove_config(f"source-ip-edge:{key}", path=True)
        assert edge.up().summary.result == "succeeded"
    assert wait_until(lambda: not edge.lab.host_path(DENY_FILE).exists(), 10)
    assert _passes(edge, passing) and _passes(edge, denied)


def _converge_refuse_and_change(edge, passing, denied, deny_file: Path, long_deny: list[str]) -> None:
    started = time.monotonic()
    result = edge.up()
    print(f"first up with two 100,000-network lists: {time.monotonic() - started:.1f} s")
    assert result.summary.result == "succeeded"
    assert _passes(edge, passing), "outside the deny list, inside the allow list"
    assert not _passes(edge, denied), "refused at the edge"
    on_host = edge.lab.host_path(DENY_FILE).read_text().splitlines()
    assert on_host[0].startswith("# Managed by source-ip-edge")
    # The file's networks and the lab stack's own deny entries, nothing else.
    assert {*long_deny, f"{denied.address}/32"} <= set(on_host[2:]) and len(on_host) - 2 < 100_001 + 10
    summary = result.outputs["access"].value["denySummary"]
    assert summary["networks"] >= 100_001 and summary["enforcedAt"] == "both"

    # One network changes: the denied visitor leaves the list, another network joins it.
    master, processes = edge.lab.master_pid(), edge.lab.haproxy_pids()
    _write(deny_file, [*long_deny, "10.255.255.0/32"])
    load = edge.lab.start_load(passing, "http", seconds=25, max_requests=200_000, concurrency=3)
    enforced: list[float] = []

    def watch(up_started: float) -> None:  # bounded: until the change shows or 120 s
        deadline = up_started + 120
        while not enforced and time.monotonic() < deadline:
            if _passes(edge, denied):
                enforced.append(time.monotonic() - up_started)
            time.sleep(0.1)

    try:
        time.sleep(2)  # the load runs before the change
        up_started = time.monotonic()
        watcher = threading.Thread(target=watch, args=(up_started,))
        watcher.start()
        changed = edge.up()
        up_seconds = time.monotonic() - up_started
        watcher.join(timeout=130)
    finally:
        count = load_result(load, timeout=90)
    print(
        f"one-network change: enforced {enforced} s after `pulumi up` started, up took {up_seconds:.1f} s; load {count}"
    )
    assert changed.summary.result == "succeeded"
    assert enforced, "the denied visitor passes once it left the list"
    assert count["requests"] > 50 and count["failed"] == 0, count
    assert edge.lab.master_pid() == master and edge.lab.haproxy_pids() == processes, "no reload"
    assert "10.255.255.0/32" in edge.lab.host_path(DENY_FILE).read_text().splitlines()
