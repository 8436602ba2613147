# source-ip-edge: entry points. Each concern's targets live in hack/make/<concern>.mk.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
BUILD := $(ROOT)/build
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/source-ip-edge
export CACHE_DIR

include $(sort $(wildcard $(ROOT)/hack/make/*.mk))

.PHONY: help
help:
	@echo "make setup       install system packages and the Python virtualenv"
	@echo "make unit        unit tests (no root, no toolchain)"
	@echo "make render STACK=dev   offline render into build/render/STACK"
	@echo "make config-docs   Pulumi.yaml's config block and the README's config table, from the schema"
	@echo "make gateway-api-crds   the pinned Gateway API CRDs, from the sigs.k8s.io/gateway-api Go module"
	@echo "make toolchain   build/cache the Pulumi engine, plugins and istioctl"
	@echo "make lab         local lab: pulumi up against a real HAProxy host over SSH"
	@echo "make lab-down    destroy the lab stack and remove the lab"
	@echo "make lab-bench   requests lost during seamless reloads versus restarts (after make lab)"
	@echo "make bench       numbers: data path, reconfiguration, change latency, access-list scale (after make lab)"
	@echo "make fuzz        the configuration property tests with many more random inputs"
	@echo "make gateway-preview STACK=prod   the gateway's Envoy listeners, computed by istiod's code"
	@echo "make lint        actionlint over .github/workflows, shellcheck over every shell file"
	@echo "make render-test / gateway-test / lab-test / toolchain-test   one test layer"
	@echo "make test        everything (what .ci/run runs)"
