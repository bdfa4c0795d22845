# Two entry points, both idempotent: `make demo` and `make test`.
# uv comes from PyPI into .uv/ when the machine has none; it always uses the
# system's python3 and never downloads an interpreter.

PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell command -v $(PYTHON))

.PHONY: demo demo-agent test venv bytecode bench fuzz clean install

demo: bytecode
	.venv/bin/python examples/demo.py

# An agent in bubblewrap, as its own user, whose one privilege is an
# endpoint: it restarts a service through capsudo-mcp and reaches nothing
# else (examples/agent-sandbox). Needs root and bubblewrap.
demo-agent: venv
	.venv/bin/python examples/agent-sandbox/sandbox.py

test: bytecode
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
	$(UV) sync --all-packages --compile-bytecode
	touch $@

# Bytecode for the workspace's own sources too (uv compiles only what it
# installs): a machine that does not write bytecode (read-only, or
# PYTHONDONTWRITEBYTECODE) would otherwise compile them at every start.
bytecode: venv
	.venv/bin/python -m compileall -q packages/*/src

.uv/bin/uv:
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet uv

# `make install [PREFIX=/usr/local] [DESTDIR=]`: the commands on every
# user's PATH, from a virtual environment in $(PREFIX)/lib/capsudo that all
# may read and only root may write, made with the system's python3 (not one
# under a home directory). The capsudo-* packages come from wheels built
# here, never from the index; their third-party dependencies at the versions
# of uv.lock. The environment is relocatable, so a DESTDIR install works
# once moved to /; the launchers name the final path. Configuration and the
# PAM file are installed only where none exists yet. The man pages of man/
# and the completions of share/completions/ go where man and the shells look.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) $(shell command -v python3))
LIBDIR = $(PREFIX)/lib/capsudo
DOCDIR = $(PREFIX)/share/doc/capsudo
# Where bash-completion, zsh and fish look for completions under PREFIX.
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
COMMANDS = capsudo=capsudo.client capsudod=capsudo.daemon capsudod-pwauth=capsudo.pwauth capsudo-proxy=capsudo.proxy capsudoctl=capsudo.ctl
BUILD = build/install

install: $(UV)
	@umask 022; set -e; \
	rm -rf $(BUILD); mkdir -p $(BUILD); \
	$(UV) build --quiet --all-packages --wheel --out-dir $(BUILD)/wheels; \
	$(UV) export --quiet --frozen --no-dev --all-packages --no-emit-workspace --format requirements-txt \
		--output-file $(BUILD)/requirements.txt; \
	$(UV) venv --quiet --clear --relocatable --python $(INSTALL_PYTHON) $(DESTDIR)$(LIBDIR); \
	$(UV) pip install --quiet --python $(DESTDIR)$(LIBDIR)/bin/python --compile-bytecode \
		--require-hashes -r $(BUILD)/requirements.txt; \
	$(UV) pip install --quiet --python $(DESTDIR)$(LIBDIR)/bin/python --compile-bytecode \
		--no-index --no-deps $(BUILD)/wheels/*.whl; \
	install -d -m 0755 $(DESTDIR)$(PREFIX)/bin; \
	for entry in $(COMMANDS); do \
		command=$${entry%%=*}; module=$${entry#*=}; \
		printf '#!%s -I\nimport sys\nfrom %s import main\nsys.exit(main())\n' \
			$(LIBDIR)/bin/python $$module > $(DESTDIR)$(PREFIX)/bin/$$command; \
		chmod 0755 $(DESTDIR)$(PREFIX)/bin/$$command; \
	done; \
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(PREFIX)/share/capsudo; \
	for unit in examples/systemd/*.service examples/systemd/*.socket; do \
		sed 's#/usr/local/#$(PREFIX)/#g; s#/etc/capsudo/#$(SYSCONFDIR)/capsudo/#g' $$unit \
			> $(DESTDIR)$(UNITDIR)/$${unit##*/}; \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$${unit##*/}; \
	done; \
	sed 's#/usr/local/#$(PREFIX)/#g' examples/systemd/capsudod.openrc > $(DESTDIR)$(PREFIX)/share/capsudo/capsudod.openrc; \
	chmod 0755 $(DESTDIR)$(PREFIX)/share/capsudo/capsudod.openrc; \
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/; \
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/capsudo $(DESTDIR)$(SYSCONFDIR)/capsudo/endpoints; \
	if [ -f examples/capsudo.toml ] && [ ! -e $(DESTDIR)$(SYSCONFDIR)/capsudo/capsudo.toml ]; then \
		install -m 0644 examples/capsudo.toml $(DESTDIR)$(SYSCONFDIR)/capsudo/capsudo.toml; fi; \
	if [ ! -e $(DESTDIR)$(SYSCONFDIR)/pam.d/capsudo ]; then \
		install -D -m 0644 examples/pam.d/capsudo $(DESTDIR)$(SYSCONFDIR)/pam.d/capsudo; fi; \
	for page in man/*.[1-8]; do \
		[ -f "$$page" ] || continue; \
		install -D -m 0644 "$$page" $(DESTDIR)$(PREFIX)/share/man/man$${page##*.}/$${page##*/}; \
	done; \
	install -d -m 0755 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR); \
	install -m 0644 share/completions/bash/* $(DESTDIR)$(BASHCOMPDIR)/; \
	install -m 0644 share/completions/zsh/* $(DESTDIR)$(ZSHCOMPDIR)/; \
	install -m 0644 share/completions/fish/* $(DESTDIR)$(FISHCOMPDIR)/; \
	chmod -R a+rX,go-w $(DESTDIR)$(LIBDIR)

clean:
	rm -rf .venv .venv-fuzz .uv build
