"""The built Pulumi CLI, Python host and provider plugins run a program end to end."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.toolchain.helpers import new_project, require_tool, run_pulumi

KUBERNETES = ["pulumi-resource-kubernetes"]
COMMAND = ["pulumi-resource-command"]


def smoke(tmp_path: Path, env: dict[str, str], with_command: bool) -> Path:
    return new_project(
        "engine_smoke",
        tmp_path,
        env,
        KUBERNETES + (COMMAND if with_command else []),
        {
            "marker": str(tmp_path / "marker"),
            "renderDir": str(tmp_path / "rendered"),
            "withCommand": str(with_command).lower(),
        },
    )


@pytest.fixture
def smoke_project(tmp_path: Path, pulumi_env: dict[str, str]) -> Path:
    return smoke(tmp_path, pulumi_env, with_command=True)


def rendered_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "rendered").rglob("*.yaml")) if (tmp_path / "rendered").exists() else []


def test_cli_reports_its_stamped_version(toolchain_path: str, pulumi_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [require_tool("pulumi", toolchain_path), "version"], env=pulumi_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("v3.") and "dev" not in proc.stdout


def test_up_runs_the_command_and_renders_the_config_map(
    smoke_project: Path, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    run_pulumi(pulumi_env, smoke_project, "up", "--yes", "--skip-preview")

    assert (tmp_path / "marker").read_text().strip() == "created"
    outputs = json.loads(run_pulumi(pulumi_env, smoke_project, "stack", "output", "--json").stdout)
    assert outputs["stdout"] == "engine-smoke-ok"
    manifests = rendered_files(tmp_path)
    assert len(manifests) == 1, manifests
    text = manifests[0].read_text()
    assert "kind: ConfigMap" in text and "name: toolchain-smoke" in text and "greeting: hello" in text


def test_preview_after_up_reports_no_changes(smoke_project: Path, pulumi_env: dict[str, str]) -> None:
    run_pulumi(pulumi_env, smoke_project, "up", "--yes", "--skip-preview")

    proc = run_pulumi(pulumi_env, smoke_project, "preview", "--expect-no-changes", "--json")
    steps = json.loads(proc.stdout).get("steps", [])
    assert steps and all(step["op"] == "same" for step in steps), steps


def test_destroy_removes_the_command_and_the_rendered_object(
    smoke_project: Path, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    run_pulumi(pulumi_env, smoke_project, "up", "--yes", "--skip-preview")
    assert rendered_files(tmp_path)

    run_pulumi(pulumi_env, smoke_project, "destroy", "--yes", "--skip-preview")

    assert not (tmp_path / "marker").exists()
    assert rendered_files(tmp_path) == []
    state = json.loads(run_pulumi(pulumi_env, smoke_project, "stack", "export").stdout)
    assert not state["deployment"].get("resources"), "destroy left resources in the state"


def test_kubernetes_provider_renders_without_pulumi_command(pulumi_env: dict[str, str], tmp_path: Path) -> None:
    project = smoke(tmp_path, pulumi_env, with_command=False)

    run_pulumi(pulumi_env, project, "up", "--yes", "--skip-preview")
    assert len(rendered_files(tmp_path)) == 1
    run_pulumi(pulumi_env, project, "preview", "--expect-no-changes")
    run_pulumi(pulumi_env, project, "destroy", "--yes", "--skip-preview")
    assert rendered_files(tmp_path) == []


def test_automation_api_accepts_and_drives_the_built_cli(
    smoke_project: Path,
    pulumi_env: dict[str, str],
    toolchain_bin: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pulumi import automation as auto

    for key, value in pulumi_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    # root=<key dir> finds <key dir>/bin/pulumi; the constructor checks the CLI's version.
    cli = auto.PulumiCommand(root=str(toolchain_bin.parent))
    stack = auto.select_stack("test", work_dir=str(smoke_project), opts=auto.LocalWorkspaceOptions(pulumi_command=cli))

    up = stack.up()
    assert up.outputs["stdout"].value == "engine-smoke-ok"
    assert set(stack.preview().change_summary) == {"same"}
    stack.destroy()
    assert rendered_files(tmp_path) == []


def test_language_host_stops_on_the_engines_interrupt_even_when_started_with_it_ignored(toolchain_bin: Path) -> None:
    """The engine stops a plugin with SIGINT and kills it 5 s later (sdk/v3 resource/plugin/plugin.go).
    A background job of a shell without job control starts with SIGINT ignored, and children inherit
    that: the host must take the signal back, as upstream's does, or every pulumi command waits 5 s."""
    host = subprocess.Popen(
        [str(toolchain_bin / "pulumi-language-python"), "127.0.0.1:9"],  # an engine address nothing answers
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        port = host.stdout.readline().strip()
        assert port.isdigit(), (port, host.stderr.read() if host.poll() is not None else "")
        status = Path(f"/proc/{host.pid}/status").read_text()
        ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
        assert not ignored & (1 << (signal.SIGINT - 1)), "the host left SIGINT ignored"
        started = time.monotonic()
        host.send_signal(signal.SIGINT)
        assert host.wait(timeout=4) == 0
        print(f"language host stopped {time.monotonic() - started:.2f}s after SIGINT")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
