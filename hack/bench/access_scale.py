"""Access-list scale: for allow lists of 10, 1,000 and 100,000 CIDRs, the time to validate and render
the AuthorizationPolicies, their size, and the RBAC principals the gateway gets from them.

Pure and offline (no namespaces, no root). Each istiod-generated `remote_ip` principal is one
`remoteIpBlocks` entry (istio.io/istio pilot/pkg/security/authz/model/generator.go,
remoteIPGenerator.principal), so principals are counted from the rendered policies. Measured with
whatever components/source_ip_policy/policies.py does (collapsing or refusing, if it does).

    python -m hack.bench.access_scale [--runs 3] [--sizes 10,1000,100000]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
import time
from typing import Any

from components.config import ConfigError, parse_stack_config
from components.source_ip_policy.policies import authorization_policies
from hack.bench.figures import median, table

SIZES = (10, 1_000, 100_000)
# Config strings only: no traffic goes to these. A /8 so that a large list overlaps itself, as real
# block lists do (a /32 inside a listed /24), which gives collapsing something to do.
POOL = ipaddress.ip_network("10.0.0.0/8")
STACK = {
    "haproxy": {"hosts": [{"name": "bench-edge", "address": "203.0.113.110", "insecureIgnoreHostKey": True}]},
    "gateway": {"nodes": ["192.0.2.150"]},
    "istio": {"install": False},
}


def cidrs(count: int, seed: int = 11) -> list[str]:
    """`count` distinct CIDRs in POOL, 70% /32 and 30% /24, the same for a given seed."""
    rng = random.Random(seed)
    base, span = int(POOL.network_address), POOL.num_addresses
    chosen: dict[str, None] = {}
    while len(chosen) < count:
        address = base + rng.randrange(span)
        if rng.random() < 0.3:
            chosen[str(ipaddress.ip_network((address & ~0xFF, 24)))] = None
        else:
            chosen[f"{ipaddress.ip_address(address)}/32"] = None
    return list(chosen)


def one_size(count: int, runs: int) -> dict[str, Any]:
    raw = {**STACK, "access": {"allow": cidrs(count)}}
    seconds, policies, refused = [], [], None
    for _ in range(runs):
        started = time.perf_counter()
        try:
            policies = authorization_policies(parse_stack_config(raw))
        except ConfigError as error:
            refused = str(error)
        seconds.append(time.perf_counter() - started)
    sizes = [len(json.dumps(p, separators=(",", ":"))) for p in policies]
    principals = sum(
        len(source["source"].get("remoteIpBlocks", []))
        for p in policies
        for rule in p["spec"].get("rules", [])
        for source in rule.get("from", [])
    )
    return {
        "cidrs": count,
        "render_ms": round(median(seconds) * 1000, 1),
        "policies": len(policies),
        "policy_bytes": sum(sizes),
        "largest_policy_bytes": max(sizes, default=0),
        "rbac_principals": principals,
        "refused": refused,
        "runs_ms": [round(s * 1000, 1) for s in seconds],
    }


def bench(runs: int = 3, sizes=SIZES) -> dict[str, Any]:
    return {
        "sizes": [one_size(n, runs) for n in sizes],
        "generator": f"distinct CIDRs in {POOL}: 70% /32, 30% /24 (seeded), all in access.allow",
    }


HEADER = ("CIDRs", "validate+render ms", "policies", "bytes (JSON)", "RBAC principals", "refused")


def rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [s["cidrs"], s["render_ms"], s["policies"], s["policy_bytes"], s["rbac_principals"], s["refused"] or "no"]
        for s in result["sizes"]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench.access_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args(argv)
    result = bench(max(args.runs, 3), [int(n) for n in args.sizes.split(",")])
    print(table(HEADER, rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
