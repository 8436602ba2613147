# Lint layer: actionlint over .github/workflows, shellcheck over every shell file, ruff (lint and
# format) over every Python file and mypy over the program (tests/lint). shellcheck comes from Debian
# (10-setup.mk), ruff and mypy from hack/requirements-dev.txt; actionlint is built from the Go module
# proxy into the cache, beside the toolchain but outside its cache key.
ACTIONLINT_VERSION := $(shell sed -n 's/^ACTIONLINT_VERSION=//p' $(ROOT)/hack/toolchain/versions.env)
ACTIONLINT_BIN := $(CACHE_DIR)/lint/actionlint-$(ACTIONLINT_VERSION)/bin
ACTIONLINT := $(ACTIONLINT_BIN)/actionlint

.PHONY: lint actionlint
TEST_LAYERS += lint

actionlint: $(ACTIONLINT)

# No replace directives in its go.mod, so `go install module@version` works; a version bump
# gets a directory of its own.
$(ACTIONLINT):
	@test -n "$(ACTIONLINT_VERSION)" || { echo "ACTIONLINT_VERSION missing from hack/toolchain/versions.env" >&2; exit 1; }
	GOBIN=$(ACTIONLINT_BIN) go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

lint: setup $(ACTIONLINT)
	PATH=$(ACTIONLINT_BIN):$$PATH $(PY) -m pytest -q -p no:cacheprovider tests/lint
