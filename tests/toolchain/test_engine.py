"""The built Pulumi CLI, Python host and provider plugins run a program end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.toolchain.conftest import require_tool

FIXTURE = Path(__file__).parent / "fixtures" / "engine_smoke"


def pulumi(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"pulumi {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def new_project(tmp_path: Path, pulumi_env: dict[str, str], with_command: bool) -> Path:
    tools = ["pulumi", "pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-kubernetes"]
    for tool in tools + (["pulumi-resource-command"] if with_command else []):
        require_tool(tool, pulumi_env["PATH"])
    project = tmp_path / "project"
    project.mkdir()
    (project / "__main__.py").write_text((FIXTURE / "__main__.py").read_text())
    # The program runs in the venv that runs these tests (it has the pinned pulumi packages).
    (project / "Pulumi.yaml").write_text(
        (FIXTURE / "Pulumi.yaml.in").read_text().replace("@VIRTUALENV@", sys.prefix))
    pulumi(pulumi_env, project, "stack", "init", "test")
    pulumi(pulumi_env, project, "config", "set", "marker", str(tmp_path / "marker"))
    pulumi(pulumi_env, project, "config", "set", "renderDir", str(tmp_path / "rendered"))
    pulumi(pulumi_env, project, "config", "set", "withCommand", str(with_command).lower())
    return project


@pytest.fixture
def smoke_project(tmp_path: Path, pulumi_env: dict[str, str]) -> Path:
    return new_project(tmp_path, pulumi_env, with_command=True)


def rendered_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "rendered").rglob("*.yaml")) if (tmp_path / "rendered").exists() else []


def test_cli_reports_its_stamped_version(toolchain_path: str, pulumi_env: dict[str, str]) -> None:
    proc = subprocess.run([require_tool("pulumi", toolchain_path), "version"], env=pulumi_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("v3.") and "dev" not in proc.stdout


def test_up_runs_the_command_and_renders_the_config_map(
    smoke_project: Path, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    pulumi(pulumi_env, smoke_project, "up", "--yes", "--skip-preview")

    assert (tmp_path / "marker").read_text().strip() == "created"
    outputs = json.loads(pulumi(pulumi_env, smoke_project, "stack", "output", "--json").stdout)
    assert outputs["stdout"] == "engine-smoke-ok"
    manifests = rendered_files(tmp_path)
    assert len(manifests) == 1, manifests
    text = manifests[0].read_text()
    assert "kind: ConfigMap" in text and "name: toolchain-smoke" in text and "greeting: hello" in text


def test_preview_after_up_reports_no_changes(
    smoke_project: Path, pulumi_env: dict[str, str]
) -> None:
    pulumi(pulumi_env, smoke_project, "up", "--yes", "--skip-preview")

    proc = pulumi(pulumi_env, smoke_project, "preview", "--expect-no-changes", "--json")
    steps = json.loads(proc.stdout).get("steps", [])
    assert all(step["op"] == "same" for step in steps), steps


def test_destroy_removes_the_command_and_the_rendered_object(
    smoke_project: Path, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    pulumi(pulumi_env, smoke_project, "up", "--yes", "--skip-preview")
    assert rendered_files(tmp_path)

    pulumi(pulumi_env, smoke_project, "destroy", "--yes", "--skip-preview")

    assert not (tmp_path / "marker").exists()
    assert rendered_files(tmp_path) == []
    state = json.loads(pulumi(pulumi_env, smoke_project, "stack", "export").stdout)
    assert not state["deployment"].get("resources"), "destroy left resources in the state"


def test_kubernetes_provider_renders_without_pulumi_command(pulumi_env: dict[str, str], tmp_path: Path) -> None:
    project = new_project(tmp_path, pulumi_env, with_command=False)

    pulumi(pulumi_env, project, "up", "--yes", "--skip-preview")
    assert len(rendered_files(tmp_path)) == 1
    pulumi(pulumi_env, project, "preview", "--expect-no-changes")
    pulumi(pulumi_env, project, "destroy", "--yes", "--skip-preview")
    assert rendered_files(tmp_path) == []
