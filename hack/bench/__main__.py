"""`make bench`: every bench in one run, one JSON file (build/bench.json) and one table.

    python -m hack.bench [--out build/bench.json] [--runs 3] [--seconds 5] [--only datapath,reconfigure,...]

Each figure is a median of at least 3 runs; each comparison is measured in the same run on the same
machine, interleaved (compare ratios, not absolute numbers, between machines). The reconfiguration
and preview benches need `make lab` and the toolchain's environment; the data-path bench makes
network namespaces of its own, and so does the edge access-list bench; the gateway access-list bench
is offline.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from hack.bench import access_edge, access_scale, change_latency, datapath, reconfigure
from hack.bench.figures import cpu_times, steal_share, table
from hack.bench.netns import exit_on_sigterm

BENCHES = ("datapath", "reconfigure", "change_latency", "access_scale", "access_edge")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench.json"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="each wrk measurement")
    parser.add_argument("--lab", default=os.environ.get("LAB_NAME", "lab"))
    parser.add_argument("--only", default=",".join(BENCHES))
    args = parser.parse_args(argv)
    only = args.only.split(",")
    if args.runs < 3 or set(only) - set(BENCHES):
        parser.error(f"at least 3 runs; --only takes {','.join(BENCHES)}")
    exit_on_sigterm()
    load = os.getloadavg()
    report = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "loadavg_at_start": [round(x, 2) for x in load],
        },
    }
    if set(only) != set(BENCHES) and args.out.exists():
        # A partial run updates its sections of an earlier report and says so.
        earlier = json.loads(args.out.read_text())
        report["machine"]["cpu_steal"] = dict(earlier.get("machine", {}).get("cpu_steal", {}))
        report = {**earlier, **report, "partial_rerun": only}
    started = time.monotonic()
    tables = []
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each bench, so a later failure keeps what was measured
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    # On a virtual machine the hypervisor may give the lab machine's CPUs to others (steal): a
    # figure measured while it did is slower for reasons outside the edge. Each part says how much.
    steal: dict[str, float | None] = report["machine"].setdefault("cpu_steal", {})
    mark = cpu_times()

    def stolen(part: str) -> None:
        nonlocal mark
        now = cpu_times()
        steal[part] = steal_share(mark, now)
        mark = now

    if "datapath" in only:
        print("data path ...", file=sys.stderr)
        report["datapath"] = result = datapath.bench(args.runs, args.seconds)
        tables.append(("Data path (wrk from a visitor namespace)", datapath.HEADER, datapath.rows(result)))
        stolen("datapath")
        save()
    if "reconfigure" in only:
        print("reconfiguration under load ...", file=sys.stderr)
        report["reconfigure"] = result = reconfigure.bench(args.lab, args.runs)
        tables.append(
            ("Reconfiguration under connection-per-request load", reconfigure.HEADER, reconfigure.rows(result))
        )
        stolen("reconfigure")
        save()
    if "change_latency" in only:
        print("change latency ...", file=sys.stderr)
        report["change_latency"] = result = change_latency.bench(args.runs, True, args.lab)
        tables.append(("Change latency", change_latency.HEADER, change_latency.rows(result)))
        stolen("change_latency")
        save()
    if "access_scale" in only:
        print("access-list scale ...", file=sys.stderr)
        report["access_scale"] = result = access_scale.bench(args.runs)
        tables.append(("Access-list scale (allow list)", access_scale.HEADER, access_scale.rows(result)))
        stolen("access_scale")
        save()
    if "access_edge" in only:
        print("access lists at the edge ...", file=sys.stderr)
        report["access_edge"] = result = access_edge.bench(args.runs, args.seconds)
        tables.append(("Access lists at the edge (deny list)", access_edge.CPU_HEADER, access_edge.cpu_rows(result)))
        tables.append(("Access lists: validate and render", access_edge.RENDER_HEADER, access_edge.render_rows(result)))
        stolen("access_edge")
        save()
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = round(time.monotonic() - started)
    save()
    for title, header, rows in tables:
        print(f"\n{title}\n{table(header, rows)}")
    print(
        f"\nmedians of {args.runs} runs; {os.cpu_count()} CPUs, load average {load[0]:.1f} at start, "
        f"{report['machine']['loadavg_at_end'][0]:.1f} at end; CPU time stolen by the hypervisor: "
        + ", ".join(f"{part} {share:.0%}" for part, share in steal.items() if share is not None)
        + f"; written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
