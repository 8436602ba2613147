"""The gateway's listeners for a lab stack: from the lab's running istiod over xDS (live) and from
istiod's code run offline on the stack's render, both by gateway-preview (hack/gateway-preview/live.go,
hack/gateway-preview/README.md). Each answer is the tool's printed summary and its facts JSON: the
checks' results, each listener's filters, XFF hops and RBAC addresses, and the probes' verdicts.

Used by hack/lab/prove.py (the live rows of the proof table) and tests/lab/test_live_istiod.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hack.lab.labkit import REPO, Lab

GATEWAY_PREVIEW = REPO / "build" / "gateway-preview" / "bin" / "gateway-preview"


@dataclass(frozen=True)
class GatewayAnswer:
    returncode: int
    output: str
    """The summary (one block per gateway pod when live) and the `check NAME: ok|FAIL` lines."""
    facts: dict
    """The first pod's facts (gateway-preview -facts); empty if the tool failed before writing them."""

    @property
    def failed_checks(self) -> dict[str, list[str]]:
        return {name: problems for name, problems in (self.facts.get("checks") or {}).items() if problems}


def render(lab: Lab, stack: str) -> Path:
    """The stack's offline render (its objects and outputs, under Pulumi's mocks): what the
    expectations come from, live or offline."""
    out = REPO / "build" / lab.name / "render" / stack
    subprocess.run(
        [sys.executable, "-m", "components.render", "--stack", stack, "--out", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out


def ask(lab: Lab, stack: str, *, live: bool, render_dir: Path | None = None, tag: str = "") -> GatewayAnswer:
    """gateway-preview on the stack: live from the lab's istiod (as the gateway's pods), or offline.
    render_dir: a render made before (render()) instead of a fresh one; tag: a name of its own for
    the answer's files (for answers asked while another one runs)."""
    render_dir = render_dir or render(lab, stack)
    facts = REPO / "build" / lab.name / ("live" if live else "offline") / (stack + tag) / "facts.json"
    facts.unlink(missing_ok=True)
    argv = [
        str(GATEWAY_PREVIEW),
        "-render",
        str(render_dir),
        "-stack-file",
        str(REPO / f"Pulumi.{stack}.yaml"),
        "-facts",
        str(facts),
        "-out",
        str(facts.with_name("listeners.json")),
    ]
    if live:
        control_plane = json.loads(lab.control_plane.read_text())
        argv += ["-xds", control_plane["istiod"]["grpc"], "-kubeconfig", str(lab.kubeconfig)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return GatewayAnswer(
        returncode=result.returncode,
        output=result.stdout + result.stderr,
        facts=json.loads(facts.read_text()) if facts.exists() else {},
    )
