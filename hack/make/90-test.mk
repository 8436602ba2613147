# `make test` runs every layer the project has. Each layer adds itself to TEST_LAYERS; the
# main job is part of it too: `make lab` on a fresh lab, the gateway xDS layer while the lab's
# stack exists (so the lab stack is compiled by istiod's generator as well), then `make lab-down`,
# which runs even when something before it failed.
TEST_LAYERS := unit $(filter-out gateway-test,$(TEST_LAYERS)) lab-main
.PHONY: test lab-main
test: $(TEST_LAYERS)

lab-main: setup
	@status=0; \
	$(MAKE) --no-print-directory lab && $(MAKE) --no-print-directory gateway-test || status=$$?; \
	$(MAKE) --no-print-directory lab-down || status=$$((status ? status : 1)); \
	exit $$status
