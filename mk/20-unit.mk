.PHONY: unit render
unit: setup
	$(PY) -m pytest -q tests/unit

STACK ?= dev
render: setup-python
	$(PY) -m source_ip_edge.tools.render --stack $(STACK) --out $(BUILD)/render/$(STACK)
