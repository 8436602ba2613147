"""Running the built CLI on the fixture programs."""

import shutil
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
PYTHON_TOOLS = ["pulumi", "pulumi-language-python", "pulumi-language-python-exec"]


def require_tool(name: str, path: str) -> str:
    found = shutil.which(name, path=path)
    assert found, f"{name} is not in the toolchain; see the output of `make toolchain`"
    return found


def run_pulumi(
    env: dict[str, str], cwd: Path, *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["pulumi", *args, "--non-interactive"],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, f"pulumi {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def new_project(
    fixture: str,
    tmp_path: Path,
    env: dict[str, str],
    tools: list[str],
    config: dict[str, str],
    secrets: dict[str, str] | None = None,
) -> Path:
    """Copy a fixture program into tmp_path/project, init stack `test` and set its config."""
    for tool in PYTHON_TOOLS + tools:
        require_tool(tool, env["PATH"])
    project = tmp_path / "project"
    project.mkdir()
    (project / "__main__.py").write_text((FIXTURES / fixture / "__main__.py").read_text())
    # The program runs in the venv that runs these tests (it has the pinned pulumi packages).
    (project / "Pulumi.yaml").write_text(
        (FIXTURES / fixture / "Pulumi.yaml.in").read_text().replace("@VIRTUALENV@", sys.prefix)
    )
    run_pulumi(env, project, "stack", "init", "test")
    for key, value in config.items():
        run_pulumi(env, project, "config", "set", key, value)
    for key, value in (secrets or {}).items():
        # From stdin: a value such as a PEM key would otherwise be parsed as a flag.
        run_pulumi(env, project, "config", "set", "--secret", key, stdin=value)
    return project
