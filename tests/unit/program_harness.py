"""Run the Pulumi program under mocks and record every registration (type, name, parent,
dependencies, inputs), so tests can check components and the edges between them."""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks

from components.program import build


@functools.cache
def generated_private_key() -> str:
    """A throwaway ed25519 key made with ssh-keygen at test time (never committed)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
        return path.read_text()


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    dependencies: list[str]
    provider: str
    inputs: dict
    delete_before_replace: bool
    aliases: list[tuple[str, str]] = field(default_factory=list)
    """Where this resource was before: (parent URN, name) of each alias spec (same type)."""


@dataclass
class Run:
    registrations: list[Registration] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    edge: Any = None

    def one(self, type_: str, name_suffix: str = "") -> Registration:
        found = [r for r in self.registrations if r.type == type_ and r.name.endswith(name_suffix)]
        assert len(found) == 1, f"{type_} {name_suffix}: {[r.name for r in found]}"
        return found[0]

    def all(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]


class _Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        return f"{args.name}-id", args.inputs

    def call(self, args):
        return {}


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks, run: Run):
        super().__init__(mocks)
        self.run = run

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = pulumi.runtime.rpc.deserialize_properties(request.object) if request.custom else {}
            self.run.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    provider=request.provider,
                    inputs=inputs,
                    delete_before_replace=request.deleteBeforeReplace,
                    aliases=[(a.spec.parentUrn, a.spec.name) for a in request.aliases if a.HasField("spec")],
                )
            )
        return response


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's wire marker for a secret value


def unwrap_secret(value: Any) -> tuple[bool, Any]:
    """(is it a secret?, the value inside) for a deserialized input."""
    if isinstance(value, dict) and value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
        return True, value["value"]
    return False, value


_GENERATED = object()


def crds_the_stack_needs(_config, names) -> dict[str, set[str]]:
    """A cluster that has every CRD asked for, serving v1."""
    return {name: {"v1"} for name in names}


def run_program(
    raw_config: dict[str, Any],
    *,
    ssh_private_key: Any = _GENERATED,
    secrets: dict[str, str] | None = None,
    crd_versions=crds_the_stack_needs,
    gateway_placement=lambda _config: None,
    extra_config: dict[str, str] | None = None,
    run: Run | None = None,
) -> Run:
    """`secrets`: other secret keys (e.g. vrrpPassword), set as `pulumi config set --secret` would.
    `crd_versions`: the cluster's CRDs as the program's cluster read would return them.
    `gateway_placement`: the cluster's nodes and gateway pods as its read would return them (None: not read).
    `extra_config`: other namespaces' keys (e.g. kubernetes:context), as plain strings.
    `run`: where to record, for a test that looks at the registrations of a program that fails."""
    if ssh_private_key is _GENERATED:
        ssh_private_key = generated_private_key()
    config = {f"source-ip-edge:{key}": json.dumps(value) for key, value in raw_config.items()}
    secret_keys = []
    if ssh_private_key is not None:
        config["source-ip-edge:sshPrivateKey"] = ssh_private_key
        secret_keys.append("source-ip-edge:sshPrivateKey")
    for key, value in (secrets or {}).items():
        config[f"source-ip-edge:{key}"] = value
        secret_keys.append(f"source-ip-edge:{key}")
    config.update(extra_config or {})
    pulumi.runtime.set_all_config(config, secret_keys)
    run = run if run is not None else Run()
    mocks = _Mocks()
    pulumi.runtime.set_mocks(
        mocks, project="source-ip-edge", stack="unit", preview=False, monitor=_RecordingMonitor(mocks, run)
    )

    @pulumi.runtime.test
    def program():
        run.edge = build(crd_versions=crd_versions, gateway_placement=gateway_placement)
        run.outputs = run.edge.outputs
        return pulumi.Output.from_input(run.edge.outputs)

    program()
    return run
