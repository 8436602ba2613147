# Render layer: the example stacks rendered offline, checked against Istio's CRD schemas and by
# istioctl (from the toolchain).
.PHONY: render-test
TEST_LAYERS += render-test
render-test: setup toolchain
	eval "$$($(MAKE) -s toolchain-env)" && $(PY) -m pytest -q tests/render
