"""Exports the lab stack's Istio objects from the lab's API server into build/<lab>/kubernetes, one
YAML file per object (`<kind>-<namespace>-<name>.yaml`), for `istioctl validate` (make lab-validate).

What is exported is what the API server holds after `pulumi up` (it accepted them through the real
istiod's validation webhook): every EnvoyFilter and AuthorizationPolicy in the lab's cluster, which
only the stack creates. The server's bookkeeping (uid, resourceVersion, managedFields, status) is
left out, so each file reads like a manifest. Exits non-zero when there is nothing to export.
Usage: python -m hack.lab.export_objects [LAB_NAME]   (kubectl of the toolchain on PATH)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from hack.lab.labkit import Lab

KINDS = ("envoyfilters.networking.istio.io", "authorizationpolicies.security.istio.io")
SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")


def as_manifest(item: dict[str, Any]) -> dict[str, Any]:
    """An object as the API server returns it, without what the server added to it."""
    metadata = {k: v for k, v in item["metadata"].items() if k not in SERVER_FIELDS}
    return {"apiVersion": item["apiVersion"], "kind": item["kind"], "metadata": metadata, "spec": item["spec"]}


def export(lab: Lab) -> list[Path]:
    items = lab.kube_json(",".join(KINDS), "--all-namespaces")["items"]
    out = lab.dir / "kubernetes"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    written = []
    for item in items:
        manifest = as_manifest(item)
        meta = manifest["metadata"]
        path = out / f"{manifest['kind'].lower()}-{meta['namespace']}-{meta['name']}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        written.append(path)
    return written


def main(name: str) -> int:
    lab = Lab.load(name)
    written = export(lab)
    if not written:
        print(f"the lab's API server holds no {' or '.join(KINDS)}: is the stack up?", file=sys.stderr)
        return 1
    print(
        f"exported {len(written)} objects from {lab.kubeconfig} to {lab.dir / 'kubernetes'}: "
        + ", ".join(p.stem for p in written)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "lab"))
