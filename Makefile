# The two commands of README.md: `make demo` (set up, then run the whole pipeline on Fashion-MNIST
# with the embedded SmolLM2 model) and `make test` (set up, then run the test suite).
VENV := .venv
STAMP := $(VENV)/.makd-setup-done

.PHONY: setup demo test test-fast clean-demo

# The llama.cpp check runs every time (a few seconds): a venv or home folder may be shared by machines
# with different CPUs, and a build that does not fit this one must be replaced before anything runs.
setup: $(STAMP)
	@$(VENV)/bin/python -m makd_cli.llamacpp_build ensure

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

demo: setup
	$(MAKE) -C examples/fashion-mnist

test: setup
	$(VENV)/bin/python -m pytest -q

test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow"

clean-demo:
	rm -rf examples/fashion-mnist/work
