"""Access lists at the edge: HAProxy's CPU time per connection with deny lists of 0, 1,000, 100,000
and 1,000,000 networks (`tcp-request connection reject if { src -f FILE }`, the rendered haproxy.cfg
and list file), and the time and peak memory to validate and render such lists (list files read,
the edge's file and the gateway's split AuthorizationPolicies).

The data path is datapath.py's (visitor — router — edge HAProxy — gateway stand-in, in namespaces of
this bench's own), one HAProxy at a time, its list sizes interleaved run by run; CPU per connection
is measured with a new connection per request (wrk, `Connection: close`), where the lookup happens
once per request. The visitor is in none of the lists, so every connection is looked up and passes.
Render figures come from a fresh Python process per size (its peak resident memory, VmHWM, is the
figure).

    python -m hack.bench.access_edge [--runs 3] [--seconds 5] [--sizes 0,1000,100000,1000000]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from components.config import parse_stack_config
from components.haproxy_host.access_list import render_edge_lists
from components.haproxy_host.haproxy_cfg import render_haproxy_config
from hack.bench import datapath
from hack.bench.figures import median, table
from hack.bench.netns import BenchNamespaces, wait_until

SIZES = (0, 1_000, 100_000, 1_000_000)
RENDER_SIZES = (100_000, 1_000_000)
RUN_DIR = datapath.RUN_DIR.with_name(datapath.RUN_DIR.name + "-lists")
PREFIX = "siel"  # its own namespaces: datapath.py's ("sieb") may run beside it


def stack(size: int, list_file: Path | None) -> dict[str, Any]:
    raw = json.loads(json.dumps(datapath.BENCH_STACK))
    if size:
        raw["access"] = {"denyFrom": [str(list_file)], "denyAt": "both"}
    return raw


# Config strings only: no traffic goes to these. 1.0.0.0-223.255.255.255, where a million networks
# stay apart as in real feeds (in one /8 they would merge into a few thousand).
POOL_START, POOL_END = int(ipaddress.ip_address("1.0.0.0")), int(ipaddress.ip_address("224.0.0.0"))


def cidrs(count: int, seed: int = 11) -> list[str]:
    """`count` distinct CIDRs, 70% /32 and 30% /24, the same for a given seed; never the bench's
    visitor's (198.51.100.0/24)."""
    rng = random.Random(seed)
    visitor = ipaddress.ip_network("198.51.100.0/24")
    chosen: dict[str, None] = {}
    while len(chosen) < count:
        address = rng.randrange(POOL_START, POOL_END)
        network = ipaddress.ip_network((address & ~0xFF, 24) if rng.random() < 0.3 else (address, 32))
        if not network.overlaps(visitor):
            chosen[str(network)] = None
    return list(chosen)


def write_list(size: int, folder: Path) -> Path:
    path = folder / f"deny-{size}.txt"
    path.write_text("# bench list\n" + "\n".join(cidrs(size)) + "\n")
    return path


def edge_config(size: int, folder: Path) -> str:
    """The rendered haproxy.cfg for a stack with a `size`-network deny list, its list file written in
    `folder` and named there."""
    config = parse_stack_config(stack(size, write_list(size, folder) if size else None))
    cfg = render_haproxy_config(config)
    for edge_list in render_edge_lists(config.access):
        local = folder / Path(edge_list.path).name
        local.write_text(edge_list.text)
        cfg = cfg.replace(edge_list.path, str(local))
    return cfg


def cpu_bench(runs: int, seconds: float, sizes=SIZES) -> dict[str, Any]:
    net = BenchNamespaces(PREFIX, datapath.LINKS, RUN_DIR)
    with net:
        datapath.start_gateway(net)
        status = f"http://{datapath.GATEWAY}:{datapath.NODE_PORTS['status']}/healthz/ready"
        wait_until(
            lambda: (
                net.run("edge", ["curl", "-sf", "-o", "/dev/null", "--max-time", "1", status], timeout=5).returncode
                == 0
            ),
            10,
            "gateway stand-in",
        )
        configs = {size: edge_config(size, net.run_dir) for size in sizes}
        url = f"http://{datapath.EDGE}/"
        targets = {
            f"deny-{size}": datapath.Target(
                url, start=lambda size=size: datapath.start_haproxy(net, configs[size], f"deny-{size}")
            )
            for size in sizes
        }
        pairs = [(f"deny-{size}", f"deny-{sizes[0]}") for size in sizes[1:]]
        return datapath.measure(net, targets, runs, seconds, pairs)


_RENDER_ONE = """
import json, sys, time
from pathlib import Path
from components.config import parse_stack_config
from components.haproxy_host.access_list import render_edge_lists
from components.haproxy_host.haproxy_cfg import render_haproxy_config
from components.source_ip_policy.policies import authorization_policies
from hack.bench.access_edge import stack
size, path = int(sys.argv[1]), Path(sys.argv[2])
started = time.perf_counter()
config = parse_stack_config(stack(size, path))
parsed = time.perf_counter()
cfg = render_haproxy_config(config)
lists = render_edge_lists(config.access)
policies = authorization_policies(config)
done = time.perf_counter()
print(json.dumps({
    "validate_s": round(parsed - started, 2),
    "render_s": round(done - parsed, 2),
    "total_s": round(done - started, 2),
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would be the bench's own.
    "peak_rss_mb": round(int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))) / 1024),
    "after_merging": len(config.access.deny_blocks),
    "edge_file_bytes": sum(len(l.text) for l in lists),
    "policies": len(policies),
    "largest_policy_bytes": max(len(json.dumps(p, separators=(",", ":"))) for p in policies),
}))
"""


def render_bench(runs: int, sizes=RENDER_SIZES) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            path = write_list(size, Path(folder))
            samples = []
            for _ in range(runs):
                out = subprocess.run(
                    [sys.executable, "-c", _RENDER_ONE, str(size), str(path)],
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=True,
                    cwd=Path(__file__).resolve().parents[2],
                )
                samples.append(json.loads(out.stdout))
            figures = {key: samples[0][key] for key in samples[0]}
            for key in ("validate_s", "render_s", "total_s", "peak_rss_mb"):
                figures[key] = median(s[key] for s in samples)
            results.append({"networks": size, **figures, "runs_total_s": [s["total_s"] for s in samples]})
    return results


def bench(runs: int = 3, seconds: float = 5, sizes=SIZES, render_sizes=RENDER_SIZES) -> dict[str, Any]:
    return {
        "cpu": cpu_bench(runs, seconds, sizes),
        "render": render_bench(runs, render_sizes),
        "generator": "distinct CIDRs in 1.0.0.0-223.255.255.255: 70% /32, 30% /24 (seeded), in access.denyFrom",
        "goals": {"cpu_100k_over_empty": 1.05, "render_1m_seconds": 30, "render_1m_mb": 1024},
    }


CPU_HEADER = ("deny list", "mode", "req/s", "CPU us/request", "CPU ratio to empty")
RENDER_HEADER = ("networks", "validate s", "render s", "peak RSS MB", "after merging", "policies", "edge file bytes")


def cpu_rows(result: dict[str, Any]) -> list[list[Any]]:
    out = []
    for mode in datapath.MODES:
        per_name = result["cpu"][mode]
        base = next(name for name in per_name if name.startswith("deny-"))
        for name, s in per_name.items():
            if not name.startswith("deny-"):
                continue
            ratio = per_name["cpu_ratios"].get(f"{name}/{base}")
            out.append(
                [name.removeprefix("deny-"), mode, s["rps"], s["cpu_us_per_request"], f"{ratio}x" if ratio else "1"]
            )
    return out


def render_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            r["networks"],
            r["validate_s"],
            r["render_s"],
            r["peak_rss_mb"],
            r["after_merging"],
            r["policies"],
            r["edge_file_bytes"],
        ]
        for r in result["render"]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench.access_edge", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--render-sizes", default=",".join(map(str, RENDER_SIZES)))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    datapath.exit_on_sigterm()
    result = bench(
        max(args.runs, 3),
        args.seconds,
        tuple(int(n) for n in args.sizes.split(",")),
        tuple(int(n) for n in args.render_sizes.split(",")),
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(CPU_HEADER, cpu_rows(result)))
    print(table(RENDER_HEADER, render_rows(result)))
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
