"""The Gateway API side of a gateway.api: gateway-api stack: the pinned CRDs are the module's, fit the
pinned Istio, and every rendered Gateway API object validates against their schemas, read strictly."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from components.config import GATEWAY_API_VERSION
from components.istio_mesh.gateway_api_crds import PINNED_INSTALL
from components.istio_objects import GATEWAY_API_GROUP
from hack.tools import gateway_api_crds

from .test_istio_schema import _strict

GATEWAY_API_STACKS = ("gwapi", "gwapi-native", "gwapi-terminate")
INSTALLING_STACKS = ("gwapi", "gwapi-terminate")  # istio.install: true, so the pinned CRDs are rendered


@pytest.fixture(scope="session")
def gateway_api_module_dir() -> Path:
    """sigs.k8s.io/gateway-api at the pinned version, from the Go module proxy (cached)."""
    return gateway_api_crds.module_dir(GATEWAY_API_VERSION)


@pytest.fixture(scope="session")
def gateway_api_schemas(gateway_api_module_dir: Path) -> dict[tuple[str, str], dict]:
    schemas = {}
    for path in sorted((gateway_api_module_dir / "config/crd/standard").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schemas[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = _strict(
                        version["schema"]["openAPIV3Schema"]
                    )
    return schemas


def _objects(render_dir: Path):
    for path in sorted((render_dir / "kubernetes").glob("*.yaml")):
        yield path.name, yaml.safe_load(path.read_text())


def test_pinned_install_is_the_modules_standard_channel(gateway_api_module_dir):
    assert PINNED_INSTALL.read_text() == gateway_api_crds.standard_install(GATEWAY_API_VERSION), (
        "components/istio_mesh/pinned differs from the module: run make gateway-api-crds"
    )


def test_pinned_version_is_the_one_the_pinned_istio_is_built_against(istio_module_dir):
    # istiod's Gateway API controller is compiled against one sigs.k8s.io/gateway-api minor.
    go_mod = (istio_module_dir / "go.mod").read_text()
    required = re.search(r"sigs\.k8s\.io/gateway-api (v\d+\.\d+)\.\d+", go_mod)
    assert required, "the istio module does not require sigs.k8s.io/gateway-api"
    assert GATEWAY_API_VERSION.startswith(required.group(1) + "."), (GATEWAY_API_VERSION, required.group(0))


@pytest.mark.parametrize("stack", GATEWAY_API_STACKS)
def test_rendered_gateway_api_objects_match_the_pinned_crds(stack, rendered, gateway_api_schemas):
    objects = [
        (name, obj) for name, obj in _objects(rendered[stack]) if obj["apiVersion"].startswith(GATEWAY_API_GROUP + "/")
    ]
    assert [obj["kind"] for _, obj in objects] == ["Gateway"], objects
    for name, obj in objects:
        schema = gateway_api_schemas.get((obj["apiVersion"], obj["kind"]))
        assert schema is not None, (
            f"{name}: {obj['apiVersion']} {obj['kind']} is not a served version of the pinned CRDs"
        )
        jsonschema.validate({"spec": obj["spec"]}, {**schema, "required": ["spec"]})


@pytest.mark.parametrize("stack", INSTALLING_STACKS)
def test_rendered_crds_are_the_pinned_objects_unchanged(stack, rendered):
    pinned = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(PINNED_INSTALL.read_text()) if o}
    written = {
        (o["kind"], o["metadata"]["name"]): o
        for _, o in _objects(rendered[stack])
        if (o["kind"], o["metadata"]["name"]) in pinned
    }
    assert written.keys() == pinned.keys()
    for key, obj in pinned.items():
        assert written[key]["spec"] == obj["spec"], key
        assert written[key]["metadata"]["annotations"] == obj["metadata"]["annotations"], key


@pytest.mark.parametrize("stack", GATEWAY_API_STACKS)
def test_gateway_listeners_use_the_ports_haproxy_sends_to_and_its_overlay_pins_them(stack, rendered):
    import json

    outputs = json.loads((rendered[stack] / "outputs.json").read_text())
    objects = dict(_objects(rendered[stack]))
    gateway = next(o for o in objects.values() if o["kind"] == "Gateway")
    ports = {listener["port"] for listener in gateway["spec"]["listeners"]}
    assert ports == {f["targetPort"] for f in outputs["frontends"]}
    ref = gateway["spec"]["infrastructure"]["parametersRef"]
    overlay = next(o for o in objects.values() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref["name"])
    service = yaml.safe_load(overlay["data"]["service"])["spec"]
    pinned = {p["port"]: p["nodePort"] for p in service["ports"]}
    node_ports = outputs["gateway"]["service"]["nodePorts"]
    assert pinned == {15021: node_ports["status"], **{f["targetPort"]: f["backendPort"] for f in outputs["frontends"]}}


def test_strict_gateway_schema_catches_a_misspelt_field(gateway_api_schemas):
    schema = gateway_api_schemas[(f"{GATEWAY_API_GROUP}/v1", "Gateway")]
    typo = {
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
            "infrastructure": {"annotation": {"proxy.istio.io/config": "{}"}},
        }
    }
    with pytest.raises(jsonschema.ValidationError, match="annotation"):
        jsonschema.validate(typo, schema)


def test_the_gateway_api_stacks_cover_both_https_listeners(rendered):
    """The schema checks above see a passthrough HTTPS listener and a terminating one."""
    https = {}
    for stack in GATEWAY_API_STACKS:
        gateway = next(o for _, o in _objects(rendered[stack]) if o["kind"] == "Gateway")
        https[stack] = next(listener for listener in gateway["spec"]["listeners"] if listener["name"] == "https")
    modes = {(listener["protocol"], listener["tls"]["mode"]) for listener in https.values()}
    assert modes == {("TLS", "Passthrough"), ("HTTPS", "Terminate")}, https
    terminating = https["gwapi-terminate"]["tls"]
    assert terminating["certificateRefs"] == [{"group": "", "kind": "Secret", "name": "edge-tls"}]
