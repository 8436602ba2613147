# Fuzzed configuration: hypothesis property tests over the whole configuration contract. `make unit`
# and `make render-test` run FUZZ_EXAMPLES=50 derandomized examples per property; `make fuzz` runs
# many more with fresh random inputs (the Istio CRD property needs Go for the istio.io/istio module).
FUZZ_EXAMPLES ?= 2000

.PHONY: fuzz
fuzz: setup
	FUZZ_RANDOM=1 FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider \
	  tests/unit/test_config_fuzz.py tests/render/test_config_fuzz_objects.py
