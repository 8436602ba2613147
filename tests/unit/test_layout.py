"""The package layout the README describes: pure renderers and configuration never import pulumi."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT

PACKAGE = ROOT / "source_ip_edge"
PURE_MODULES = sorted(
    ["source_ip_edge.config"]
    + [
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (PACKAGE / "render").rglob("*.py")
        if path.name != "__init__.py"
    ]
)


def test_there_are_renderers_to_check() -> None:
    assert "source_ip_edge.render.haproxy_host.haproxy_cfg" in PURE_MODULES
    assert len(PURE_MODULES) >= 6


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


def test_every_renderer_has_a_resource_of_the_same_name() -> None:
    renderers = {p.stem if p.is_file() else p.name for p in (PACKAGE / "render").iterdir()
                 if not p.name.startswith("__") and p.name != "stack_outputs.py"}
    resources = {p.stem for p in (PACKAGE / "resources").glob("*.py") if not p.name.startswith("__")}
    assert renderers <= resources, f"renderers without a resource of the same name: {renderers - resources}"


def test_every_module_opens_with_a_line_that_says_what_lives_there() -> None:
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert text.startswith('"""') and len(text.split("\n", 1)[0]) > 10, f"{path}: no opening line"
