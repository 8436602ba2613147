"""Reconfiguration under load: requests that fail while `pulumi up` applies a configuration change
to the lab's HAProxy host (upload, `haproxy -c`, swap, seamless reload), beside restarts of the same
host (`systemctl restart haproxy`, hack/lab/bench_reload.py), under the same load.

A run is three changes (or three restarts), each under its own bounded connection-per-request load
from a visitor (hack/lab/load.py: a new connection per request, the body checked to be the visitor's own
address), started a second before and stopped a second after. Each change sets
`haproxy.timeouts.client` to a value it has not had in this bench, so every `pulumi up` rewrites
haproxy.cfg and reloads. The stack file is put back and converged at the end, also on failure.
Needs `make lab` and the toolchain's environment.

    python -m hack.bench.reconfigure [--runs 3] [LAB_NAME]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

from hack.bench.figures import median, table
from hack.lab.bench_reload import RESTART
from hack.lab.labkit import REPO, Lab, load_result

CHANGED_KEY = "source-ip-edge:haproxy.timeouts.client"
CHANGES_PER_RUN = 3
LOAD_SECONDS = 110  # the bound of each load; stopped earlier, once its change is done


def pulumi(stack: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["pulumi", *args, "--stack", stack, "--non-interactive"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pulumi {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def under_load(lab: Lab, action) -> tuple[dict[str, Any], float]:
    """One action under its own load: (the load's counts, the action's seconds)."""
    load = lab.start_load(lab.visitors[0], "http", seconds=LOAD_SECONDS, max_requests=1_000_000, concurrency=3)
    try:
        time.sleep(1)
        if load.poll() is not None:
            raise RuntimeError(f"the load stopped early: {load.communicate()}")
        started = time.monotonic()
        action()
        seconds = time.monotonic() - started
        time.sleep(1)
        if load.poll() is not None:
            raise RuntimeError("the load ended before the action did: raise LOAD_SECONDS")
    finally:
        if load.poll() is None:
            load.terminate()  # our own child, by pid: load.py stops taking requests and reports
        counts = load_result(load, timeout=60)
    return counts, seconds


def bench(name: str = "lab", runs: int = 3) -> dict[str, Any]:
    lab = Lab.load(name)
    if lab.master_pid() is None:
        raise RuntimeError("no HAProxy master on the lab host: run `make lab` first")
    stack_file = REPO / f"Pulumi.{name}.yaml"
    original = stack_file.read_text()
    results: dict[str, list[dict[str, Any]]] = {"pulumi up": [], "restart": []}
    value = [50]

    def change() -> None:
        value[0] += 1
        pulumi(name, "config", "set", "--path", CHANGED_KEY, f"{value[0]}s")
        pulumi(name, "up", "--yes", "--color", "never", "--suppress-progress")
        live = lab.host_path("/etc/haproxy/haproxy.cfg").read_text()
        if f"timeout client {value[0]}s" not in live:
            raise RuntimeError(f"pulumi up did not put `timeout client {value[0]}s` on the host")

    def restart() -> None:
        # The host the visitors' requests reach: with a VIP (an HA pair), the one holding it now.
        holders = lab.vip_holders() if getattr(lab, "vip", None) else []
        result = lab.ssh(RESTART, address=holders[0].address) if holders else lab.ssh(RESTART)
        if result.returncode != 0:
            raise RuntimeError(result.stderr)

    try:
        for run in range(runs):
            order = [("pulumi up", change), ("restart", restart)]
            for label, action in order if run % 2 == 0 else reversed(order):
                totals = {"requests": 0, "failed": 0, "failures": {}, "seconds": []}
                for _ in range(CHANGES_PER_RUN):
                    counts, seconds = under_load(lab, action)
                    totals["requests"] += counts["requests"]
                    totals["failed"] += counts["failed"]
                    for kind, n in counts["failures"].items():
                        totals["failures"][kind] = totals["failures"].get(kind, 0) + n
                    totals["seconds"].append(round(seconds, 1))
                results[label].append(totals)
                print(
                    f"  run {run + 1}/{runs} {CHANGES_PER_RUN} x {label}: {totals['failed']} of "
                    f"{totals['requests']} failed {totals['failures'] or ''}",
                    file=sys.stderr,
                )
    finally:
        if stack_file.read_text() != original:
            stack_file.write_text(original)
            pulumi(name, "up", "--yes", "--color", "never", "--suppress-progress")
    return {
        label: {
            "failed": median(r["failed"] for r in rs),
            "requests": median(r["requests"] for r in rs),
            "action_seconds": median(s for r in rs for s in r["seconds"]),
            "runs": rs,
        }
        for label, rs in results.items()
    } | {"changes_per_run": CHANGES_PER_RUN, "changed_key": CHANGED_KEY, "stack": name}


HEADER = ("action (x3, under load)", "failed requests", "of requests", "seconds per action")


def rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            f"{CHANGES_PER_RUN} x {label}",
            result[label]["failed"],
            result[label]["requests"],
            result[label]["action_seconds"],
        ]
        for label in ("pulumi up", "restart")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench.reconfigure", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("name", nargs="?", default="lab")
    args = parser.parse_args(argv)
    result = bench(args.name, max(args.runs, 3))
    print(table(HEADER, rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
