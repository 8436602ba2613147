# The local lab: `make lab` converges the lab stack against real HAProxy hosts over SSH and a real
# Kubernetes API server (Istio installed by the stack with Helm), and proves the visitor's address
# reaches the gateway. See hack/lab/up.sh for the topology.
LAB_NAME ?= lab
export LAB_NAME
TOOLCHAIN_ENV = eval "$$($(MAKE) -s --no-print-directory toolchain-env)"
# The lab's live state (host root, keys, pid files) is outside the checkout; hack/lab/common.sh says where.
LAB_RUN_DIR = $(shell LAB_NAME=$(LAB_NAME) bash -c 'source $(ROOT)/hack/lab/common.sh && echo "$$LAB_DIR"')

.PHONY: lab lab-cache lab-setup lab-prove lab-validate lab-down lab-bench lab-test
lab: lab-setup
	@start=$$(date +%s); \
	$(TOOLCHAIN_ENV) && bash hack/lab/stack.sh up && \
	if [ "$$(LAB_NAME=$(LAB_NAME) bash -c '. hack/lab/common.sh; echo $$LAB_DATA_PLANE')" = envoy ]; then \
	  bash hack/lab/app.sh apply; fi && \
	$(MAKE) -s --no-print-directory lab-prove lab-validate && \
	echo "make lab: done in $$(( $$(date +%s) - start ))s after set-up"

lab-cache: setup-system
	bash hack/lab/cache-rootfs.sh

# The control plane it starts runs the toolchain's binaries.
lab-setup: setup lab-cache toolchain
	$(TOOLCHAIN_ENV) && bash hack/lab/up.sh

lab-prove:
	$(TOOLCHAIN_ENV) && $(PY) -m hack.lab.prove $(LAB_NAME)

# The stack's Istio objects as the lab's API server holds them, exported with kubectl into
# build/<lab>/kubernetes and checked by Istio's own validation.
lab-validate:
	@$(TOOLCHAIN_ENV) && $(PY) -m hack.lab.export_objects $(LAB_NAME) && \
	files=$$(find $(BUILD)/$(LAB_NAME)/kubernetes -name '*.yaml' | sort) && \
	istioctl validate $$(printf ' -f %s' $$files)

# Destroys the stack only when it has state (toolchain-env would otherwise build the toolchain).
lab-down:
	@status=0; \
	if [ -f $(LAB_RUN_DIR)/up ] && ls $(BUILD)/pulumi-state/.pulumi/stacks/*/$(LAB_NAME).json* >/dev/null 2>&1; then \
	  $(TOOLCHAIN_ENV) && { bash hack/lab/app.sh delete || true; } && bash hack/lab/stack.sh destroy || status=$$?; \
	fi; \
	bash hack/lab/down.sh; exit $$status

# Numbers: requests lost during 3 reloads versus 3 restarts under load (needs `make lab` first).
lab-bench:
	$(PY) -m hack.lab.bench_reload $(LAB_NAME)

# Integration tests on their own lab instance and stack (lab-test), through the Automation API.
# Bounded: SIGINT after 55 min lets pytest run its finalizers (destroy, hack/lab/down.sh).
lab-test: setup lab-cache toolchain
	$(TOOLCHAIN_ENV) && timeout -k 60 --signal=INT 3300 $(PY) -m pytest -q -p no:cacheprovider -s tests/lab

TEST_LAYERS += lab-test

# The edge on the real gateway data plane (LAB_DATA_PLANE=envoy: pilot-agent and the stock Envoy in
# every gateway pod) on the lab-test instance, after lab-test (they share its name and lock).
lab-envoy-test: setup lab-cache toolchain
	$(TOOLCHAIN_ENV) && LAB_NAME=lab-test timeout -k 60 --signal=INT 1200 $(PY) -m pytest -q -p no:cacheprovider -s tests/lab_envoy

TEST_LAYERS += lab-envoy-test
