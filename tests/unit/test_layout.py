"""The layout the README describes: one folder per component under components/, where only the
ComponentResource (component.py) and the program's own entry points import pulumi; every renderer
and the configuration are pure."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT

PACKAGE = ROOT / "components"
COMPONENT_FOLDERS = (
    "haproxy_host",
    "istio_mesh",
    "istio_gateway",
    "proxy_protocol",
    "source_ip_policy",
    "trusted_peer_lock",
    "edge",
)
# Modules that declare resources or run the program, besides each folder's component.py.
EFFECTFUL = {"program.py", "render.py", "custom_resource.py", "istio_mesh/gateway_api.py"}


def _module(path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


PURE_MODULES = sorted(
    _module(path)
    for path in PACKAGE.rglob("*.py")
    if path.name not in ("__init__.py", "component.py") and str(path.relative_to(PACKAGE)) not in EFFECTFUL
)


def test_there_are_renderers_to_check() -> None:
    assert "components.haproxy_host.haproxy_cfg" in PURE_MODULES
    assert "components.config" in PURE_MODULES
    assert len(PURE_MODULES) >= 8


def test_renderers_and_config_import_nothing_from_pulumi() -> None:
    # In a fresh interpreter, so a module imported by another test cannot hide an import.
    probe = (
        "import importlib, sys\n"
        f"for name in {PURE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted(m for m in sys.modules if m == 'pulumi' or m.startswith(('pulumi.', 'pulumi_')))\n"
        "    assert not loaded, f'{name} imports {loaded[:3]}'\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_component_folder_holds_its_component_resource() -> None:
    for folder in COMPONENT_FOLDERS:
        component = PACKAGE / folder / "component.py"
        assert component.is_file(), f"{folder}: no component.py"
        assert "pulumi.ComponentResource" in component.read_text(), f"{component}: no ComponentResource"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(COMPONENT_FOLDERS), "a component folder the layout does not list, or one missing"


def test_every_module_opens_with_a_line_that_says_what_lives_there() -> None:
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.name == "__init__.py" and not text:
            continue
        assert text.startswith('"""') and len(text.split("\n", 1)[0]) > 10, f"{path}: no opening line"
