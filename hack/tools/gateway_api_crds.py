"""Writes the project's pinned copy of the Gateway API standard-channel install from its Go module.

    python -m hack.tools.gateway_api_crds          # (re)write the pinned copy
    python -m hack.tools.gateway_api_crds --check  # exit 1 if it differs from the module

The objects are `config/crd/standard/*.yaml` of `sigs.k8s.io/gateway-api` at GATEWAY_API_VERSION
(config.py), unchanged and in file order: what `kubectl apply -f standard-install.yaml` of that
release applies (the CRDs and the safe-upgrades ValidatingAdmissionPolicy). The Go module proxy
serves the module; no other download is needed, so the copy can be rebuilt wherever Go runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from components.config import GATEWAY_API_VERSION

MODULE = "sigs.k8s.io/gateway-api"
PINNED_PATH = (
    Path(__file__).resolve().parents[2]
    / "components"
    / "istio_mesh"
    / "pinned"
    / f"gateway-api-{GATEWAY_API_VERSION}-standard-install.yaml"
)


def module_dir(version: str = GATEWAY_API_VERSION) -> Path:
    """The module's folder in the Go module cache (downloaded through the module proxy if needed)."""
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{MODULE}@{version}"], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"go mod download {MODULE}@{version}: {result.stderr or result.stdout}")
    return Path(json.loads(result.stdout)["Dir"])


def standard_install(version: str = GATEWAY_API_VERSION) -> str:
    files = sorted((module_dir(version) / "config" / "crd" / "standard").glob("*.yaml"))
    if not files:
        raise RuntimeError(f"{MODULE}@{version} has no config/crd/standard/*.yaml")
    header = f"# {MODULE}@{version} config/crd/standard, unchanged (Apache-2.0). Generated: make gateway-api-crds\n"
    return header + "".join(f"---\n# {f.name}\n{f.read_text().rstrip()}\n" for f in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.tools.gateway_api_crds", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the pinned copy with the module, write nothing")
    args = parser.parse_args(argv)
    text = standard_install()
    if args.check:
        if not PINNED_PATH.exists() or PINNED_PATH.read_text() != text:
            print(
                f"{PINNED_PATH.name} differs from {MODULE}@{GATEWAY_API_VERSION}: run make gateway-api-crds",
                file=sys.stderr,
            )
            return 1
        return 0
    PINNED_PATH.parent.mkdir(parents=True, exist_ok=True)
    PINNED_PATH.write_text(text)
    print(f"wrote {PINNED_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
