"""Change latency: a no-op `pulumi preview` of the lab stack beside an empty Python Pulumi program
on the same engine, and the offline render of a large stack (200 gateway nodes, 5,000 CIDRs)
beside the dev stack. Interleaved, medians of --runs runs, ratios of the medians.

The preview needs the toolchain's environment (`eval "$(make -s toolchain-env)"`: pulumi on PATH,
the file:// backend, the passphrase) and the lab stack (`make lab`). The empty program is a stack of
its own project in the same backend, made for the run and removed after it.

    python -m hack.bench.change_latency [--runs 3] [--no-preview] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import ipaddress
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from hack.bench.figures import median, ratio, table

REPO = Path(__file__).resolve().parents[2]
EMPTY_PROJECT = "source-ip-edge-bench-empty"
BIG_NODES, BIG_CIDRS = 200, 5_000


# ---------------------------------------------------------------------------- pulumi preview


def preview_seconds(cwd: Path, stack: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [
            "pulumi",
            "preview",
            "--stack",
            stack,
            "--non-interactive",
            "--color",
            "never",
            "--suppress-progress",
            "--expect-no-changes",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"pulumi preview of {stack} failed (or was not a no-op):\n{result.stdout}{result.stderr}")
    return seconds


def make_empty_program(folder: Path) -> None:
    """A Python Pulumi program that registers nothing, on the project's virtualenv and engine."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Pulumi.yaml").write_text(
        yaml.safe_dump(
            {
                "name": EMPTY_PROJECT,
                "runtime": {"name": "python", "options": {"toolchain": "pip", "virtualenv": str(REPO / ".venv")}},
            }
        )
    )
    (folder / "__main__.py").write_text(
        '"""An empty program: the engine\'s and the language host\'s own cost."""\nimport pulumi  # noqa: F401\n'
    )
    _remove_stack(folder)  # what an interrupted run left in the backend
    subprocess.run(
        ["pulumi", "stack", "init", "bench", "--non-interactive"],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Once up, so that its previews are no-ops like the lab stack's (the stack resource exists).
    subprocess.run(
        ["pulumi", "up", "--yes", "--stack", "bench", "--non-interactive", "--suppress-progress"],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


def remove_empty_program(folder: Path) -> None:
    if (folder / "Pulumi.yaml").exists():
        _remove_stack(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _remove_stack(folder: Path) -> None:
    subprocess.run(
        ["pulumi", "stack", "rm", "bench", "--yes", "--force", "--non-interactive"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def preview(runs: int, stack: str, work: Path) -> dict[str, Any]:
    if not shutil.which("pulumi"):
        raise RuntimeError('pulumi is not on PATH: eval "$(make -s toolchain-env)"')
    if not (REPO / f"Pulumi.{stack}.yaml").exists():
        raise RuntimeError(f"no Pulumi.{stack}.yaml: run `make lab` first")
    empty = work / "empty-program"
    make_empty_program(empty)
    try:
        times: dict[str, list[float]] = {"lab": [], "empty": []}
        preview_seconds(empty, "bench")  # warm-up: plugin and bytecode caches
        preview_seconds(REPO, stack)
        for run in range(runs):
            order = [("lab", REPO, stack), ("empty", empty, "bench")]
            for name, cwd, name_of_stack in order if run % 2 == 0 else reversed(order):
                times[name].append(preview_seconds(cwd, name_of_stack))
                print(f"  run {run + 1}/{runs} preview {name}: {times[name][-1]:.2f}s", file=sys.stderr)
    finally:
        remove_empty_program(empty)
    lab, empty_s = median(times["lab"]), median(times["empty"])
    version = subprocess.run(["pulumi", "version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return {
        "lab_s": round(lab, 2),
        "empty_s": round(empty_s, 2),
        "ratio": ratio(lab, empty_s),
        "runs": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
        "pulumi": version,
        "stack": stack,
    }


# ---------------------------------------------------------------------------- offline render


def big_stack(folder: Path) -> None:
    """Pulumi.yaml and Pulumi.big.yaml: the dev stack with 200 gateway nodes and 5,000 CIDRs."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Pulumi.yaml", folder / "Pulumi.yaml")
    stack = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
    config = stack["config"]
    # Config strings only: nothing is sent to these addresses.
    config["source-ip-edge:gateway"]["nodes"] = [str(ipaddress.ip_address("10.20.0.1") + i) for i in range(BIG_NODES)]
    config["source-ip-edge:access"] = {
        "allow": [str(ipaddress.ip_network(f"10.{64 + i // 256}.{i % 256}.0/24")) for i in range(BIG_CIDRS // 2)],
        "deny": [f"{ipaddress.ip_address('10.200.0.1') + 2 * i}/32" for i in range(BIG_CIDRS - BIG_CIDRS // 2)],
    }
    (folder / "Pulumi.big.yaml").write_text(yaml.safe_dump(stack, sort_keys=False))


def render_seconds(stack: str, project_root: Path, out: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.render",
            "--stack",
            stack,
            "--out",
            str(out),
            "--project-root",
            str(project_root),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"render of {stack} failed: {result.stderr}")
    return seconds


def render(runs: int, work: Path) -> dict[str, Any]:
    root = work / "big-stack"
    big_stack(root)
    times: dict[str, list[float]] = {"dev": [], "big": []}
    order = [("dev", REPO), ("big", root)]
    render_seconds("dev", REPO, work / "render-dev")  # warm-up: bytecode caches
    for run in range(runs):
        for name, project_root in order if run % 2 == 0 else reversed(order):
            times[name].append(render_seconds(name, project_root, work / f"render-{name}"))
            print(f"  run {run + 1}/{runs} render {name}: {times[name][-1]:.2f}s", file=sys.stderr)
    dev, big = median(times["dev"]), median(times["big"])
    return {
        "dev_s": round(dev, 2),
        "big_s": round(big, 2),
        "ratio": ratio(big, dev),
        "big_stack": {"gateway_nodes": BIG_NODES, "cidrs": BIG_CIDRS},
        "runs": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
    }


def profile_render(work: Path, out: Path, top: int = 25) -> str:
    """cProfile of the big stack's render in this process; returns the top functions by own time."""
    from components import render as render_tool

    root = work / "big-stack"
    big_stack(root)
    profiler = cProfile.Profile()
    profiler.enable()
    render_tool.render("big", work / "render-big-profiled", root)
    profiler.disable()
    profiler.dump_stats(out)
    text = out.with_suffix(".txt")
    with text.open("w") as stream:
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(top)
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(top)
    return str(text)


def bench(runs: int = 3, with_preview: bool = True, stack: str = "lab") -> dict[str, Any]:
    work = REPO / "build" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as folder:
        result: dict[str, Any] = {"render": render(max(runs, 5), Path(folder))}
        if with_preview:
            result["preview"] = preview(runs, stack, Path(folder))
    return result


HEADER = ("what", "median s", "baseline", "baseline s", "ratio")


def rows(result: dict[str, Any]) -> list[list[Any]]:
    out = []
    if "preview" in result:
        p = result["preview"]
        out.append(
            [f"no-op pulumi preview ({p['stack']})", p["lab_s"], "empty Python program", p["empty_s"], f"{p['ratio']}x"]
        )
    r = result["render"]
    out.append(
        [
            f"offline render ({BIG_NODES} nodes, {BIG_CIDRS:,} CIDRs)",
            r["big_s"],
            "dev stack",
            r["dev_s"],
            f"{r['ratio']}x",
        ]
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench.change_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-preview", action="store_true", help="only the offline render (no toolchain, no lab)")
    parser.add_argument("--stack", default=os.environ.get("LAB_NAME", "lab"))
    parser.add_argument("--profile", type=Path, help="cProfile the big render into FILE (.prof; a .txt beside it)")
    args = parser.parse_args(argv)
    if args.profile:
        work = REPO / "build" / "bench"
        with tempfile.TemporaryDirectory(dir=work) as folder:
            print(profile_render(Path(folder), args.profile.resolve()))
        return 0
    result = bench(max(args.runs, 3), not args.no_preview, args.stack)
    print(table(HEADER, rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
