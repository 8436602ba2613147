# `make test` runs every layer the project has. Each layer adds itself to TEST_LAYERS.
TEST_LAYERS := unit $(TEST_LAYERS)
.PHONY: test
test: $(TEST_LAYERS)
