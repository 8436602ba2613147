"""The Gateway API CRDs a gateway.api: gateway-api stack needs: the pinned standard-channel install
(istio.install: true), or the CRDs an adopted cluster must already serve. Pure: imports nothing
from pulumi."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from components.config import GATEWAY_API_ISTIO_LINE, GATEWAY_API_VERSION, ConfigError, StackConfig
from components.istio_objects import GATEWAY_API_GROUP, uses_gateway_api

PINNED_INSTALL = Path(__file__).resolve().parent / "pinned" / f"gateway-api-{GATEWAY_API_VERSION}-standard-install.yaml"


@lru_cache(maxsize=1)
def _pinned_install() -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all(PINNED_INSTALL.read_text()) if doc)


def gateway_api_install(config: StackConfig) -> list[dict[str, Any]]:
    """The Gateway API standard-channel objects to install (istio.install: true), else nothing.

    The project's pinned copy of sigs.k8s.io/gateway-api's config/crd/standard at
    GATEWAY_API_VERSION (`make gateway-api-crds` writes it from the Go module).
    """
    if not uses_gateway_api(config) or not config.istio.install:
        return []
    return [dict(obj) for obj in _pinned_install()]


def required_crds(config: StackConfig) -> list[str]:
    """The CRDs an adopted cluster (istio.install: false) must already have for this stack."""
    if not uses_gateway_api(config):
        return []
    kinds = ["gatewayclasses", "gateways", "httproutes"]
    if config.gateway.https_tls_mode == "Passthrough":
        kinds.append("tlsroutes")
    return [f"{kind}.{GATEWAY_API_GROUP}" for kind in kinds]


def check_required_crds(config: StackConfig, served_versions: Mapping[str, Collection[str]]) -> None:
    """Refuse an adopted cluster (istio.install: false) that lacks a Gateway API CRD this stack needs,
    or whose Gateway CRD does not serve the v1 our Gateway is written in (Gateway API before v1.0).

    `served_versions`: each required CRD the cluster has, with the versions it serves (the cluster
    read is istio_mesh/gateway_api.py's); one a CRD the cluster lacks is absent. Raises ConfigError.
    """
    if config.istio.install:
        return
    required = required_crds(config)
    missing = [crd for crd in required if crd not in served_versions]
    line = f"{GATEWAY_API_ISTIO_LINE[0]}.{GATEWAY_API_ISTIO_LINE[1]}"
    if missing:
        raise ConfigError(
            "gateway.api",
            "gateway-api needs the Gateway API CRDs, which source-ip-edge:istio.install: false "
            "leaves to you, and the cluster "
            f"lacks {', '.join(missing)}: install the standard channel of the Gateway API release your Istio supports "
            f"({GATEWAY_API_VERSION} for Istio {line}) before `pulumi up`",
        )
    gateways = f"gateways.{GATEWAY_API_GROUP}"
    if gateways in served_versions and "v1" not in served_versions[gateways]:
        raise ConfigError(
            "gateway.api",
            f"gateway-api writes a {GATEWAY_API_GROUP}/v1 Gateway, and the cluster's {gateways} serves only "
            f"{', '.join(sorted(served_versions[gateways])) or 'no version'} (Gateway API before v1.0); with "
            f"source-ip-edge:istio.install: false upgrade the CRDs to the standard channel your Istio supports "
            f"({GATEWAY_API_VERSION} for Istio {line})",
        )
