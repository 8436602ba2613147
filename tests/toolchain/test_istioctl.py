"""The built istioctl validates EnvoyFilters offline, as the render and lab layers use it."""

import subprocess
from pathlib import Path

from tests.toolchain.helpers import require_tool

PROXY_PROTOCOL_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"


def envoy_filter(filter_value: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: proxy-protocol
  namespace: istio-system
spec:
  workloadSelector:
    labels:
      istio: ingressgateway
  configPatches:
  - applyTo: LISTENER_FILTER
    match:
      context: GATEWAY
      listener:
        portNumber: 80
    patch:
      operation: INSERT_FIRST
      value:
{filter_value}"""


def validate(toolchain_path: str, env: dict[str, str], tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "envoyfilter.yaml"
    path.write_text(text)
    return subprocess.run(
        [require_tool("istioctl", toolchain_path), "validate", "-f", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_envoy_filter_with_typed_config_is_valid(toolchain_path, pulumi_env, tmp_path) -> None:
    proc = validate(
        toolchain_path,
        pulumi_env,
        tmp_path,
        envoy_filter(
            f"        name: envoy.filters.listener.proxy_protocol\n"
            f'        typed_config:\n          "@type": {PROXY_PROTOCOL_TYPE}\n'
        ),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "without typed_config" not in proc.stdout + proc.stderr


def test_envoy_filter_with_unknown_typed_config_is_rejected(toolchain_path, pulumi_env, tmp_path) -> None:
    proc = validate(
        toolchain_path,
        pulumi_env,
        tmp_path,
        envoy_filter(
            f"        name: envoy.filters.listener.proxy_protocol\n"
            f'        typed_config:\n          "@type": {PROXY_PROTOCOL_TYPE}Typo\n'
        ),
    )
    assert proc.returncode != 0
    assert "could not resolve Any message type" in proc.stdout + proc.stderr


def test_envoy_filter_with_unknown_operation_is_rejected(toolchain_path, pulumi_env, tmp_path) -> None:
    text = envoy_filter(
        f"        name: envoy.filters.listener.proxy_protocol\n"
        f'        typed_config:\n          "@type": {PROXY_PROTOCOL_TYPE}\n'
    )
    proc = validate(toolchain_path, pulumi_env, tmp_path, text.replace("INSERT_FIRST", "INSERT_TOP"))
    assert proc.returncode != 0
    assert "INSERT_TOP" in proc.stdout + proc.stderr


def test_name_only_listener_filter_is_only_a_warning_for_istioctl(toolchain_path, pulumi_env, tmp_path) -> None:
    # istioctl accepts it with a warning; Envoy itself rejects name-only listener filters
    # (Istio >= 1.19), which is why the project always renders typed_config.
    proc = validate(toolchain_path, pulumi_env, tmp_path, envoy_filter("        name: proxy_protocol\n"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "without typed_config" in proc.stdout + proc.stderr
