.PHONY: unit render config-docs
unit: setup
	$(PY) -m pytest -q tests/unit

STACK ?= dev
render: setup-python
	$(PY) -m components.render --stack $(STACK) --out $(BUILD)/render/$(STACK)

# Pulumi.yaml's config block and the README's configuration table, from config_schema.json
# (tests/unit/test_config_docs.py fails when they differ).
config-docs: setup-python
	$(PY) -m hack.tools.config_docs

# The pinned Gateway API standard-channel install (components/istio_mesh/pinned/), from the Go module
# sigs.k8s.io/gateway-api at the version config.py pins (tests/render checks it matches).
.PHONY: gateway-api-crds
gateway-api-crds: setup-python
	$(PY) -m hack.tools.gateway_api_crds
