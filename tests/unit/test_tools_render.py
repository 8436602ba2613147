"""`python -m components.render`: the files reviewers read, and refusal of bad config."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, haproxy_check


def _render(stack: str, out: Path, project_root: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "components.render",
            "--stack",
            stack,
            "--out",
            str(out),
            "--project-root",
            str(project_root),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = {}
    for stack in ("dev", "prod"):
        target = tmp_path_factory.mktemp("render") / stack
        result = _render(stack, target)
        assert result.returncode == 0, result.stderr
        out[stack] = target
    return out


def test_dev_renders_one_host_with_config_and_scripts(rendered, tmp_path):
    dev = rendered["dev"]
    assert sorted(p.name for p in (dev / "haproxy").iterdir()) == ["edge-dev-1"]
    host = dev / "haproxy" / "edge-dev-1"
    assert sorted(p.name for p in host.iterdir()) == [
        "apply.sh",
        "haproxy.cfg",
        "install.sh",
        "restore.sh",
        "uninstall.sh",
    ]
    cfg = (host / "haproxy.cfg").read_text()
    assert cfg in (host / "apply.sh").read_text()
    assert haproxy_check(cfg, tmp_path).returncode == 0
    for script in ("apply.sh", "install.sh", "restore.sh", "uninstall.sh"):
        assert subprocess.run(["bash", "-n", str(host / script)]).returncode == 0


def test_prod_renders_two_hosts_that_pass_haproxy_check(rendered, tmp_path):
    hosts = sorted(p.name for p in (rendered["prod"] / "haproxy").iterdir())
    assert hosts == ["edge-prod-1", "edge-prod-2"]
    for host in hosts:
        result = haproxy_check((rendered["prod"] / "haproxy" / host / "haproxy.cfg").read_text(), tmp_path)
        assert result.returncode == 0, result.stderr


def test_kubernetes_objects_and_helm_releases_are_written(rendered):
    dev_objects = {p.name for p in (rendered["dev"] / "kubernetes").glob("*.yaml")}
    assert "envoyfilter-istio-system-istio-ingressgateway-proxy-protocol.yaml" in dev_objects
    envoy_filter = yaml.safe_load(
        (
            rendered["dev"] / "kubernetes" / "envoyfilter-istio-system-istio-ingressgateway-proxy-protocol.yaml"
        ).read_text()
    )
    assert envoy_filter["kind"] == "EnvoyFilter"
    assert envoy_filter["spec"]["configPatches"][1]["match"]["listener"]["portNumber"] == 80  # an int, not 80.0
    prod_objects = {p.name for p in (rendered["prod"] / "kubernetes").glob("*.yaml")}
    assert "envoyfilter-istio-system-istio-ingressgateway-proxy-protocol.yaml" not in prod_objects  # native mode
    assert "envoyfilter-istio-system-istio-ingressgateway-trusted-peers.yaml" in prod_objects  # the trusted-peer lock
    assert "authorizationpolicy-istio-system-istio-ingressgateway-source-ip-allow.yaml" in prod_objects
    for stack in ("dev", "prod"):
        releases = {
            p.stem: yaml.safe_load(p.read_text()) for p in (rendered[stack] / "kubernetes" / "helm").glob("*.yaml")
        }
        assert set(releases) == {"istio-base", "istiod", "istio-ingressgateway"}
        for release in releases.values():
            assert set(release) == {"chart", "version", "repository", "namespace", "values"}
    istiod = yaml.safe_load((rendered["prod"] / "kubernetes" / "helm" / "istiod.yaml").read_text())
    assert istiod["values"]["meshConfig"]["defaultConfig"]["gatewayTopology"] == {
        "numTrustedProxies": 0,
        "proxyProtocol": {},
    }


def test_outputs_json_has_the_stack_outputs(rendered):
    outputs = json.loads((rendered["prod"] / "outputs.json").read_text())
    assert outputs["proxyProtocol"] == {"mode": "native", "strict": True, "version": 2}
    assert outputs["envoyFilterName"] is None
    assert [h["name"] for h in outputs["haproxyHosts"]] == ["edge-prod-1", "edge-prod-2"]


def test_secrets_are_not_rendered(rendered):
    for stack in rendered.values():
        for path in stack.rglob("*"):
            if path.is_file():
                assert "PRIVATE KEY" not in path.read_text()


def test_bad_config_is_refused_with_one_line_and_nothing_written(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", project)
    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    stack["config"]["source-ip-edge:access"]["allow"] = ["198.51.100.0/24", "192.0.2.0/24", "10.0.0.0/33"]
    (project / "Pulumi.broken.yaml").write_text(yaml.safe_dump(stack))
    out = tmp_path / "out"
    result = _render("broken", out, project_root=project)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: source-ip-edge:access.allow[2]: '10.0.0.0/33' is not a CIDR"]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["project"]  # no half-written staging folder


def test_failed_render_keeps_the_previous_output(tmp_path, rendered):
    out = tmp_path / "out"
    shutil.copytree(rendered["dev"], out)
    result = _render("no-such-stack", out)
    assert result.returncode == 1 and "Pulumi.no-such-stack.yaml" in result.stderr
    assert (out / "outputs.json").exists()
