"""Proves the lab's edge: each visitor's address arrives at the gateway stand-in, over HTTP and HTTPS,
through the VIP of the HA pair; and which host holds the VIP, with haproxy and keepalived active on both.

Prints one row per HAProxy host and one per visitor address; exits non-zero if a unit is not active,
if not exactly one host holds the VIP, or if any address does not match.
Usage: python -m lab.prove [LAB_NAME]
"""

from __future__ import annotations

import sys
import time

from lab.labkit import Lab


def _table(header: tuple, rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


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


def main(name: str) -> int:
    lab = Lab.load(name)
    problems = hosts_proof(lab) if lab.hosts else 0
    print()
    rows = []
    for visitor in lab.visitors:
        http = lab.seen_by_gateway(visitor, "http")
        https = lab.seen_by_gateway(visitor, "https")
        rows.append((visitor.name, visitor.address, "VIP" if visitor.target == lab.vip else visitor.target, http, https,
                     "yes" if http == visitor.address == https else "NO"))
    _table(("visitor", "address", "to", "gateway saw (HTTP)", "gateway saw (HTTPS)", "match"), rows)
    mismatches = sum(row[-1] != "yes" for row in rows)
    if mismatches:
        print(f"{mismatches} of {len(rows)} visitor addresses did not arrive at the gateway", file=sys.stderr)
        return 1
    print(f"all {len(rows)} visitor addresses arrived at the gateway through HAProxy (PROXY v2)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "lab"))
