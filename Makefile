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

# Coverage-guided fuzzing with atheris, in a venv of its own (.venv-fuzz) so
# that make test and CI never install it: each of FUZZ_TARGETS for SECONDS
# in turn, e.g. `make fuzz SECONDS=600 FUZZ_TARGETS=handshake`. What it finds
# stays in fuzz/corpus/<target>; a crash or hang fails the run (docs/fuzzing.md).
SECONDS ?= 60
FUZZ_TARGETS ?= control frames handshake

fuzz: $(UV)
	UV_PROJECT_ENVIRONMENT=.venv-fuzz $(UV) sync --all-packages --group fuzz
	for target in $(FUZZ_TARGETS); do \
		.venv-fuzz/bin/python fuzz/fuzz_decoders.py $$target -max_total_time=$(SECONDS) -print_final_stats=1 || exit 1; \
	done

venv: .venv/.synced

.venv/.synced: $(UV) pyproject.toml packages/*/pyproject.toml
	$(UV) sync --all-packages
	touch $@

.uv/bin/uv:
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet uv

clean:
	rm -rf .venv .venv-fuzz .uv
