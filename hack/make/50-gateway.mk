# Gateway xDS layer: istiod's own config generator (istio.io/istio pilot/test/xds), in-process and
# offline, turns a stack's rendered objects plus sample app Gateways into the listeners the ingress
# gateway's Envoy would get. `make gateway-preview STACK=prod` shows them for review;
# `make gateway-test` asserts on them (hack/gateway-preview/README.md).
GATEWAY_DIR := $(ROOT)/hack/gateway-preview
GATEWAY_OUT := $(BUILD)/gateway-preview
GATEWAY_BIN := $(GATEWAY_OUT)/bin/gateway-preview
GATEWAY_SOURCES := $(wildcard $(GATEWAY_DIR)/*.go) $(GATEWAY_DIR)/go.mod $(GATEWAY_DIR)/go.sum $(wildcard $(GATEWAY_DIR)/apps/*.yaml)
# Variants that only the tests use (each mode and strictness, adopted Istio, old chart ports).
GATEWAY_VARIANTS_DIR := $(GATEWAY_DIR)/testdata/stacks
GATEWAY_VARIANTS := $(patsubst $(GATEWAY_VARIANTS_DIR)/Pulumi.%.yaml,%,$(wildcard $(GATEWAY_VARIANTS_DIR)/Pulumi.*.yaml))
# The project's own stacks that exist here (Pulumi.lab.yaml exists once `make lab` made it).
GATEWAY_STACKS := $(filter dev prod lab gwapi,$(patsubst $(ROOT)/Pulumi.%.yaml,%,$(wildcard $(ROOT)/Pulumi.*.yaml)))

.PHONY: gateway-preview gateway-test
TEST_LAYERS += gateway-test

$(GATEWAY_BIN): $(GATEWAY_SOURCES)
	cd $(GATEWAY_DIR) && go build -buildvcs=false -o $@ .

# The lab asks its live istiod with the same tool (hack/lab/gateway_xds.py).
lab-prove lab-test: $(GATEWAY_BIN)

gateway-preview: setup-python $(GATEWAY_BIN)
	$(PY) -m components.render --stack $(STACK) --out $(BUILD)/render/$(STACK)
	$(GATEWAY_BIN) -render $(BUILD)/render/$(STACK) -stack-file $(ROOT)/Pulumi.$(STACK).yaml \
	  -out $(GATEWAY_OUT)/$(STACK)/listeners.json

gateway-test: setup-python
	@rm -rf $(GATEWAY_OUT)/test-renders && mkdir -p $(GATEWAY_OUT)/test-renders
	@set -e; for s in $(GATEWAY_STACKS); do \
	  $(PY) -m components.render --stack $$s --out $(GATEWAY_OUT)/test-renders/$$s >/dev/null; done; \
	for s in $(GATEWAY_VARIANTS); do \
	  $(PY) -m components.render --stack $$s --out $(GATEWAY_OUT)/test-renders/$$s --project-root $(GATEWAY_VARIANTS_DIR) >/dev/null; done; \
	echo "gateway-test: rendered $(GATEWAY_STACKS) $(GATEWAY_VARIANTS)"
	cd $(GATEWAY_DIR) && GATEWAY_PREVIEW_RENDERS=$(GATEWAY_OUT)/test-renders \
	  GATEWAY_PREVIEW_STACK_FILES=$(ROOT):$(GATEWAY_VARIANTS_DIR) \
	  go test -buildvcs=false -count=1 -timeout 30m -v ./...
