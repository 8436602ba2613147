"""Helpers of the bench: medians, wrk's report parsed, the printed table, the machine's CPU time
taken by its hypervisor (steal)."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")


def median(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        raise ValueError("no values")
    return statistics.median(values)


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 2) if denominator else None


def duration_ms(text: str) -> float:
    """wrk's durations (`812.00us`, `1.23ms`, `2.01s`) in milliseconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNIT_MS[match[2]]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, p50/p99 latency (ms), completed requests and errors from `wrk --latency`."""
    result: dict[str, Any] = {"errors": 0, "non_2xx": 0}
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            result["p" + parts[0].rstrip("%")] = duration_ms(parts[1])
        elif re.match(r"^\s*\d+ requests in ", line):
            result["requests"] = int(parts[0])
        elif line.strip().startswith("Socket errors:"):
            result["errors"] = sum(int(n) for n in re.findall(r"\d+", line))
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            result["non_2xx"] = int(parts[-1])
    missing = {"rps", "p50", "p99", "requests"} - set(result)
    if missing:
        raise ValueError(f"wrk's report lacks {sorted(missing)}:\n{output}")
    return result


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over runs (at least 3), with the runs kept beside it."""
    keys = ("rps", "p50", "p99")
    summary: dict[str, Any] = {key: round(median(run[key] for run in runs), 3) for key in keys}
    summary["errors"] = sum(run["errors"] + run["non_2xx"] for run in runs)
    kept = (*keys, "requests", "errors", "non_2xx", "cpu_us_per_request")
    summary["runs"] = [{key: run[key] for key in kept if key in run} for run in runs]
    return summary


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table, columns left-aligned, numbers as given."""
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def cpu_times(stat: str | None = None) -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from /proc/stat's first line (proc(5): user nice system
    idle iowait irq softirq steal; guest time is already inside user)."""
    text = stat if stat is not None else Path("/proc/stat").read_text()
    fields = [int(n) for n in text.splitlines()[0].split()[1:9]]
    return fields[7], sum(fields)


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of CPU time the hypervisor gave to others between two cpu_times() (0.34: 34%)."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else None
