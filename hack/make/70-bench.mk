# Bench layer: numbers, not pass/fail (hack/bench/). Data path (HAProxy beside kernel routing and
# nginx stream, in namespaces the bench makes), reconfiguration under load and no-op preview (on
# the lab: run `make lab` first), offline render and access-list scale. Writes build/bench.json and
# prints the table; not part of `make test`.
BENCH_RUNS ?= 3

.PHONY: bench bench-tuning
# KUBECONFIG: the lab stack's kubernetes provider reaches the lab's API server (hack/lab/stack.sh does the same).
bench: setup
	$(TOOLCHAIN_ENV) && KUBECONFIG=$(LAB_RUN_DIR)/control-plane/kubeconfig $(PY) -m hack.bench --runs $(BENCH_RUNS) --out $(BUILD)/bench.json

# A tuning trial: the rendered haproxy.cfg against it with one change to global/defaults, paired
# run by run (`make bench-tuning VARIANT=splice-auto`; the variants are in hack/bench/datapath.py).
VARIANT ?= splice-auto
bench-tuning: setup
	$(PY) -m hack.bench.datapath --runs 5 --seconds 3 --variant $(VARIANT)
