"""Offline render: evaluate the program for one stack under Pulumi's mocks and write what it makes.

    python -m components.render --stack prod --out build/render/prod

No Pulumi CLI, cluster or network. Secrets are replaced by placeholders. Writes:
  haproxy/<host>/haproxy.cfg and the remote commands beside it (install.sh, apply.sh, restore.sh, uninstall.sh)
  kubernetes/<kind>-<namespace>-<name>.yaml, one object each
  kubernetes/helm/<release>.yaml with chart, version, repository, namespace, values
  outputs.json, the stack outputs
Bad config: one line on stderr naming the key, exit 1, nothing written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SECRET_PLACEHOLDER = "<secret {key} not rendered>"

COMMAND_TYPE = "command:remote:Command"
HELM_RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
SCRIPT_FILES = {
    "install": {"create": "install.sh", "delete": "uninstall.sh"},
    "config": {"create": "apply.sh", "delete": "restore.sh"},
    "keepalived": {"create": "keepalived_apply.sh", "delete": "keepalived_restore.sh"},
    # The edge's access lists: the command, and the list file it gets on stdin.
    "deny-list": {"create": "deny_list_apply.sh", "delete": "deny_list_remove.sh", "stdin": "source-ip-edge-deny.acl"},
    "allow-list": {
        "create": "allow_list_apply.sh",
        "delete": "allow_list_remove.sh",
        "stdin": "source-ip-edge-allow.acl",
    },
}
# An optional secret is rendered as set when the stack needs it: vrrpPassword with haproxy.vip.
# Its placeholder must pass config.py's check (keepalived's auth_pass: at most 8 characters).
NEEDED_WITH = {"vrrpPassword": ("haproxy", "vip")}
PLACEHOLDERS = {"vrrpPassword": "rendered"}


# libyaml's safe loader and dumper where PyYAML has them (same output, several times faster on
# large stacks: 5,000 CIDRs made the pure-Python parser a quarter of the render's time).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class RenderError(Exception):
    pass


def stack_config(stack: str, project_root: Path = PROJECT_ROOT) -> tuple[dict[str, str], list[str]]:
    """The config Pulumi would give the program: project defaults overlaid by the stack file.

    Returns (config as Pulumi passes it, every value a string), and the names of secret keys.
    """
    project = yaml.load((project_root / "Pulumi.yaml").read_text(), Loader=YAML_LOADER)
    name = project["name"]
    stack_file = project_root / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        raise RenderError(f"no stack file {stack_file.name} in {project_root}")
    values: dict[str, Any] = {}
    secret_keys: list[str] = []
    stack_values = (yaml.load(stack_file.read_text(), Loader=YAML_LOADER) or {}).get("config") or {}
    stack_keys = {key if ":" in key else f"{name}:{key}" for key in stack_values}
    for key, declaration in (project.get("config") or {}).items():
        full_key = key if ":" in key else f"{name}:{key}"
        if isinstance(declaration, dict) and "default" in declaration:
            values[full_key] = declaration["default"]
        if isinstance(declaration, dict) and declaration.get("secret"):
            needed_with = NEEDED_WITH.get(key)
            if needed_with is not None:
                section = stack_values.get(f"{name}:{needed_with[0]}") or {}
                if full_key not in stack_keys and needed_with[1] not in section:
                    continue
            secret_keys.append(full_key)
    for key, value in stack_values.items():
        full_key = key if ":" in key else f"{name}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            secret_keys.append(full_key)
        values[full_key] = value
    for full_key in secret_keys:
        short = full_key.split(":", 1)[1]
        values[full_key] = PLACEHOLDERS.get(short, SECRET_PLACEHOLDER.format(key=full_key))
    as_strings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    return as_strings, sorted(set(secret_keys))


def evaluate(stack: str, project_root: Path = PROJECT_ROOT):
    """Run the program under mocks. Returns the resources it registered and the SourceIpEdge."""
    import pulumi

    from components.program import build

    config, secret_keys = stack_config(stack, project_root)
    resources: list[tuple[str, str, dict]] = []

    class RecordingMocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            resources.append((args.typ, args.name, args.inputs))
            return f"{args.name}-id", args.inputs

        def call(self, args: pulumi.runtime.MockCallArgs):
            return {}

    pulumi.runtime.set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(RecordingMocks(), project="source-ip-edge", stack=stack, preview=False)
    edges = []

    @pulumi.runtime.test
    def run():
        # No cluster here: rendered as for a cluster that has the Gateway API CRDs the stack needs, and
        # without reading where an adopted Istio's gateway pods run.
        edges.append(
            build(
                crd_versions=lambda _config, names: {name: {"v1"} for name in names},
                gateway_placement=lambda _c: None,
                project_dir=project_root,
            )
        )
        # Waiting on the outputs lets every registered resource reach the mocks.
        return pulumi.Output.from_input(edges[0].outputs)

    try:
        run()
    except pulumi.RunError as error:
        raise RenderError(str(error)) from None
    return resources, edges[0]


def _plain(value: Any) -> Any:
    """Undo the protobuf Struct round trip of mock inputs: whole floats back to ints, keys sorted."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _plain(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def write_render(resources: list[tuple[str, str, dict]], outputs: dict[str, Any], haproxy_cfg: str, out: Path) -> None:
    out.mkdir(parents=True)
    kube_dir = out / "kubernetes"
    helm_dir = kube_dir / "helm"
    helm_dir.mkdir(parents=True)
    host_names = [host["name"] for host in outputs["haproxyHosts"]]
    for host in host_names:
        (out / "haproxy" / host).mkdir(parents=True)
        (out / "haproxy" / host / "haproxy.cfg").write_text(haproxy_cfg)
    for typ, name, inputs in resources:
        inputs = _plain(inputs)
        if typ == COMMAND_TYPE:
            _write_scripts(name, inputs, host_names, out / "haproxy")
        elif typ == HELM_RELEASE_TYPE:
            release = {
                "chart": inputs["chart"],
                "version": inputs["version"],
                "repository": inputs["repositoryOpts"]["repo"],
                "namespace": inputs["namespace"],
                "values": inputs.get("values", {}),
            }
            (helm_dir / f"{inputs['name']}.yaml").write_text(yaml.dump(release, Dumper=YAML_DUMPER, sort_keys=False))
        elif typ.startswith("kubernetes:") and "metadata" in inputs and not typ.startswith("pulumi:providers"):
            obj = _kubernetes_object(typ, inputs)
            meta = obj["metadata"]
            filename = f"{obj['kind'].lower()}-{meta.get('namespace', 'cluster')}-{meta['name']}.yaml"
            (kube_dir / filename).write_text(yaml.dump(obj, Dumper=YAML_DUMPER, sort_keys=False))
    (out / "outputs.json").write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n")


def _kubernetes_object(typ: str, inputs: dict) -> dict[str, Any]:
    """A manifest from a kubernetes resource's inputs; a *Patch resource is written as the patch."""
    _, group_version, kind = typ.split(":")
    kind = kind.removesuffix("Patch")
    metadata = dict(inputs["metadata"])
    # Pulumi's own annotations (e.g. pulumi.com/patchForce) steer the provider, not the object.
    annotations = {k: v for k, v in metadata.pop("annotations", {}).items() if not k.startswith("pulumi.com/")}
    if annotations:
        metadata["annotations"] = annotations
    obj = {"apiVersion": inputs.get("apiVersion", group_version.replace("core/", "")), "kind": inputs.get("kind", kind)}
    obj["metadata"] = metadata
    for key, value in inputs.items():
        if key not in ("apiVersion", "kind", "metadata"):
            obj[key] = value
    return obj


def _write_scripts(resource_name: str, inputs: dict, host_names: list[str], haproxy_dir: Path) -> None:
    for host in host_names:
        for step, files in SCRIPT_FILES.items():
            if resource_name.endswith(f"-{host}-{step}"):
                for field, filename in files.items():
                    value: Any = inputs.get(field)
                    if isinstance(value, dict) and "value" in value:  # a secret input (a list's stdin)
                        value = value["value"]
                    if value:
                        path = haproxy_dir / host / filename
                        path.write_text(value)
                        if filename.endswith(".sh"):
                            path.chmod(0o755)
                return


def render(stack: str, out: Path, project_root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Evaluate and write atomically: on any error the output folder is left as it was."""
    resources, edge = evaluate(stack, project_root)
    outputs, haproxy_cfg = edge.outputs, edge.haproxy_config
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_render(resources, outputs, haproxy_cfg, staging / "render")
        if out.exists():
            shutil.rmtree(out)
        (staging / "render").rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.render", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.STACK.yaml")
    parser.add_argument("--out", required=True, type=Path, help="output folder (replaced)")
    parser.add_argument(
        "--project-root",
        type=Path,
        default=PROJECT_ROOT,
        help="folder with Pulumi.yaml and the stack file (default: this project)",
    )
    args = parser.parse_args(argv)
    try:
        render(args.stack, args.out, args.project_root.resolve())
    except RenderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"rendered stack {args.stack} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
