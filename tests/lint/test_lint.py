"""Lint layer: every workflow passes actionlint, every shell file passes shellcheck, every Python file
passes ruff (lint and format), and the program passes mypy.

`make lint` puts actionlint (built from the Go module proxy into the cache) on PATH; shellcheck is
a Debian package `make setup` installs. A missing linter fails the tests, it never skips them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
SHEBANG = re.compile(rb"^#!\s*(?:\S*/)?(?:env\s+(?:-\S+\s+)*)?(?:\S*/)?(?:sh|bash|dash|ksh)(?:\s|$)")


def shell_files(root: Path) -> list[str]:
    """Files git knows under root (tracked, or new and not ignored) named *.sh or with a sh shebang."""
    listed = (
        subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    found = set()
    for name in filter(None, listed):
        path = root / name
        if not path.is_file():
            continue  # deleted or moved in the worktree, not yet in the index
        if name.endswith(".sh"):
            found.add(name)
            continue
        with path.open("rb") as fh:
            if SHEBANG.match(fh.readline(200)):
                found.add(name)
    return sorted(found)


def _repository_shell_files() -> tuple[list[str], str | None]:
    try:
        return shell_files(ROOT), None
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.decode() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        return [], f"git could not list the repository's files: {detail}"


SHELL_FILES, DISCOVERY_ERROR = _repository_shell_files()


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: run the lint layer with `make lint`")
    return path


def run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


# --- shellcheck --------------------------------------------------------------------------


@pytest.mark.parametrize("script", SHELL_FILES or ["<no shell files found>"])
def test_shell_file_passes_shellcheck(script: str) -> None:
    assert DISCOVERY_ERROR is None, DISCOVERY_ERROR
    assert SHELL_FILES, "no shell files found in the repository"
    # From the root, so the root's .shellcheckrc applies and `source` paths resolve beside each script.
    proc = run([tool("shellcheck"), "--color=never", script])
    assert proc.returncode == 0, f"shellcheck {script}:\n{proc.stdout}{proc.stderr}"


def test_shell_files_are_found_by_extension_and_shebang(tmp_path: Path) -> None:
    files = {
        "hack/lab/up.sh": "echo up\n",
        "ci/run": "#!/usr/bin/env bash\nmake test\n",
        "bin/posix": "#!/bin/sh\nexit 0\n",
        "bin/env-flags": "#!/usr/bin/env -S bash -e\nexit 0\n",
        "tool.py": "#!/usr/bin/env python3\n",
        "notes.txt": "bash is not a shebang\n",
        "bin/bashful": "#!/usr/bin/bashful\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "x.sh").write_text("echo x\n")
    assert shell_files(tmp_path) == ["bin/env-flags", "bin/posix", "ci/run", "hack/lab/up.sh"]


def test_ci_entry_point_and_lab_scripts_are_linted() -> None:
    assert DISCOVERY_ERROR is None, DISCOVERY_ERROR
    assert ".ci/run" in SHELL_FILES
    assert any(f.startswith("hack/lab/") and f.endswith(".sh") for f in SHELL_FILES), SHELL_FILES


def test_shellcheck_flags_an_unquoted_expansion(tmp_path: Path) -> None:
    # Under the repository's own .shellcheckrc: it must not silence the checks.
    shutil.copy(ROOT / ".shellcheckrc", tmp_path / ".shellcheckrc")
    (tmp_path / "bad.sh").write_text("#!/bin/bash\nrm -rf $1/tmp\n")
    proc = run([tool("shellcheck"), "--color=never", "bad.sh"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "SC2086" in proc.stdout


# --- actionlint --------------------------------------------------------------------------


def actionlint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # shellcheck checks every `run:` script; pyflakes is not used (no Python `run:` scripts).
    return run([tool("actionlint"), "-no-color", f"-shellcheck={tool('shellcheck')}", "-pyflakes=", *args], cwd=cwd)


def test_workflows_pass_actionlint() -> None:
    workflows = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {p.name for p in workflows} >= {"preview.yml", "test.yml"}
    proc = actionlint(*(str(p.relative_to(ROOT)) for p in workflows))
    assert proc.returncode == 0, f"actionlint:\n{proc.stdout}{proc.stderr}"


def test_actionlint_flags_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }} $HOME_DIR\n"
    )
    proc = actionlint(str(bad.relative_to(tmp_path)), cwd=tmp_path)
    assert proc.returncode != 0
    assert "potentially untrusted" in proc.stdout  # actionlint's own expression check
    assert "SC2086" in proc.stdout  # the shellcheck it runs on `run:` scripts


# Python: ruff's linter and formatter over every Python file (pyproject.toml holds their settings),
# and mypy over the Pulumi program (components/ and __main__.py). They come pinned from
# hack/requirements-dev.txt into the virtualenv that runs these tests.
def _venv_tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        pytest.fail(f"{name} is not in the virtualenv: run the lint layer with `make lint`")
    return str(path)


@pytest.mark.parametrize("argv", [["check", "."], ["format", "--check", "."]], ids=["ruff-check", "ruff-format"])
def test_python_passes_ruff(argv: list[str]) -> None:
    result = subprocess.run([_venv_tool("ruff"), *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_program_passes_mypy() -> None:
    result = subprocess.run([_venv_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
