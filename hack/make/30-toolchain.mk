# The Pulumi engine, provider plugins and istioctl, built from the Go module proxy and
# cached outside the repository (docs/toolchain.md). Progress goes to stderr.
TOOLCHAIN_BUILD := python3 $(ROOT)/hack/toolchain/build.py

.PHONY: toolchain toolchain-env toolchain-test
toolchain:
	@$(TOOLCHAIN_BUILD) build >/dev/null

# eval "$(make -s toolchain-env)": PATH, a file:// backend and a passphrase under build/.
toolchain-env:
	@$(TOOLCHAIN_BUILD) env --root $(ROOT)

toolchain-test: setup-python toolchain
	$(PY) -m pytest -q tests/toolchain

TEST_LAYERS += toolchain-test
