# Published vLLM IO Processor plugins that the tests run unchanged (tests/vllm_plugins).
#
# terratorch (PyPI) declares the `terratorch_segmentation` entry point in vLLM's group.
# Its own dependencies cannot all install here (torchgeo 0.9, which it requires, needs
# Python >= 3.12), so the wheel goes in with --no-deps into its own directory, which
# only the terratorch tests put on the path (never `make serve`); what its plugin
# imports and can install here (pydantic, rasterio, einops, regex, packaging) comes
# with the test extras, and tests/vllm_plugins/stubs stands in for the rest (see its README).
TERRATORCH_VERSION := 1.2.13
VLLM_PLUGINS_DIR := $(VENV)/vllm-plugins

$(VLLM_PLUGINS_DIR)/.installed: $(VENV)/.installed mk/vllm-plugins.mk
	rm -rf $(VLLM_PLUGINS_DIR)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --target $(VLLM_PLUGINS_DIR) terratorch==$(TERRATORCH_VERSION)
	touch $@

setup: $(VLLM_PLUGINS_DIR)/.installed
