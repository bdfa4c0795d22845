# Two entry points, both idempotent: `make demo` and `make test`.
# uv comes from PyPI into .uv/ when the machine has none; it always uses the
# system's python3 and never downloads an interpreter.

PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell command -v $(PYTHON))

.PHONY: demo test venv bench fuzz clean

demo: venv
	.venv/bin/python examples/demo.py

test: venv
	.venv/bin/python -m pytest

bench: venv
	.venv/bin/python benchmarks/run_all.py

venv: .venv/.synced

.venv/.synced: $(UV) pyproject.toml packages/*/pyproject.toml
	$(UV) sync --all-packages
	touch $@

.uv/bin/uv:
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet uv

clean:
	rm -rf .venv .uv
