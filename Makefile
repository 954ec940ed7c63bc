# faasd-py: `make run` starts the platform with a sample function; `make test` runs every test.
# Both set up everything they need first (a venv in .venv with the project installed).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The C shim (native/): built into faasd_py._native by `pip install`, with a Python fallback when
# that fails. Its standalone tests build with the sanitizers.
CC ?= cc

# CI services set CI to "true", "1" or "yes": IN_CI is 1 for any of them (in any case), empty
# otherwise, as tests/_ci.py's in_ci() reads it. Recipes test it with [ -n "$(IN_CI)" ].
IN_CI := $(if $(filter 1 true yes,$(shell printf '%s' '$(CI)' | tr '[:upper:]' '[:lower:]')),1)
NATIVE_SOURCES := $(wildcard native/*.c native/*.h native/*.cdef) native/_build.py setup.py
NATIVE_TESTS := $(patsubst native/tests/%.c,build/native-tests/%,$(wildcard native/tests/test_*.c))
NATIVE_CFLAGS := -std=gnu11 -O1 -g -Wall -Wextra -Werror -Inative \
	-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

.PHONY: install native-deps ui screenshots run test test-busy test-native lint typecheck unit bench-warm bench-crosscheck bench-prewarm bench-datapath bench-cache bench-soak bench-chaos bench-async bench-dashboard clean

$(STAMP): pyproject.toml $(NATIVE_SOURCES) | native-deps
	@echo "==> creating $(VENV) and installing faasd-py with its dev and bench extras (compiles the C shim)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@rm -f faasd_py/_native*.so  # a module built in place earlier would shadow the new one
	FAASD_REQUIRE_NATIVE=$(if $(IN_CI),1,0) $(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@$(BIN)/python -c 'from faasd_py import native; print("==> native shim:", native.describe())'
	@touch $@

install: $(STAMP)

# In CI the real path must be proven: a compiler and Python's headers are installed if missing
# (Debian's packages), redis-server, which the storage tests start on ports of their own, and
# iproute2, whose `ip` the net channel's tests read the host's links with, nftables, whose
# rules keep net-channel functions off the host's services, and openssl, which makes the
# certificate of the callback tests' TLS receiver, and chromium, the browser that the
# dashboard's tests (tests/browser) drive through Playwright. Elsewhere a missing
# compiler only means the Python fallback.
native-deps:
	@if [ -n "$(IN_CI)" ] && command -v apt-get >/dev/null; then \
		missing=""; \
		command -v $(CC) >/dev/null || missing="gcc libc6-dev"; \
		command -v redis-server >/dev/null || missing="$$missing redis-server"; \
		command -v ip >/dev/null || missing="$$missing iproute2"; \
		command -v nft >/dev/null || missing="$$missing nftables"; \
		command -v openssl >/dev/null || missing="$$missing openssl"; \
		command -v chromium >/dev/null || missing="$$missing chromium"; \
		$(PYTHON) -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
			|| missing="$$missing python3-dev"; \
		if [ -n "$$missing" ]; then \
			echo "==> installing $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		fi; \
	fi

# The dashboard (ui/: TypeScript, Vite, uPlot) is built into faasd_py/ui/static, which is
# committed, so pip install and `make run` need no Node. This rebuilds it when ui/sources.py
# finds it was built from other sources (npm 11 and Node 20.19+); without npm it says so, and
# under CI it fails: CI checks that the committed build matches its sources, it does not build.
ui:
	@if $(PYTHON) ui/sources.py check >/dev/null; then :; \
	elif command -v npm >/dev/null; then \
		echo "==> building the dashboard (ui/ -> faasd_py/ui/static)"; \
		(cd ui && npm ci --no-audit --no-fund && npm run build) && $(PYTHON) ui/sources.py write; \
	elif [ -n "$(IN_CI)" ]; then $(PYTHON) ui/sources.py check; exit 1; \
	else echo "ui: the built dashboard is older than ui/'s sources and npm is missing; kept as built"; fi

# The README's pictures of the dashboard (docs/screenshots), taken by its browser tests.
screenshots: install ui
	FAASD_SCREENSHOTS=docs/screenshots $(BIN)/pytest tests/browser -q

run: install ui
	$(BIN)/faasd-py up --deploy examples/stack.yml

lint: install
	$(BIN)/ruff check faasd_py tests bench
	$(BIN)/ruff format --check faasd_py tests bench

typecheck: install
	$(BIN)/mypy

test: lint typecheck test-native ui
	$(BIN)/pytest

# The whole suite once more, with two CPU-bound processes beside it for its whole run (CI runs
# this instead of `make test`): a test that depends on the machine's speed fails here, not on a
# busy machine later. The trap stops them however pytest ends (failure, Ctrl-C, SIGTERM).
test-busy: lint typecheck test-native ui
	@$(BIN)/python .ci/busy.py & one=$$!; \
	$(BIN)/python .ci/busy.py & two=$$!; \
	trap 'kill $$one $$two 2>/dev/null' EXIT; \
	trap 'exit 130' INT; trap 'exit 143' TERM; \
	echo "==> pytest beside two busy loops (pids $$one and $$two)"; \
	$(BIN)/pytest $(PYTEST_ARGS)

# Each native/tests/test_X.c is linked with native/X.c (and $(NATIVE_LDLIBS_X)); exit 77 means
# skipped (liburing's rule).
build/native-tests/test_%: native/tests/test_%.c native/%.c native/%.h native/tests/helpers.h
	@mkdir -p $(@D)
	$(CC) $(NATIVE_CFLAGS) native/$*.c $< -o $@ $(NATIVE_LDLIBS_$*)

test-native:
	@if ! command -v $(CC) >/dev/null; then \
		if [ -n "$(IN_CI)" ]; then echo "test-native: no C compiler ($(CC)) under CI=$(CI)" >&2; exit 1; fi; \
		echo "test-native: skipped, no C compiler ($(CC))"; exit 0; \
	fi; \
	$(MAKE) --no-print-directory $(NATIVE_TESTS) && \
	for t in $(NATIVE_TESTS); do \
		echo "==> $$t"; $$t; rc=$$?; \
		if [ $$rc -eq 77 ]; then echo "$$t: skipped"; \
		elif [ $$rc -ne 0 ]; then echo "$$t: failed ($$rc)" >&2; exit 1; fi; \
	done

bench-warm: install
	$(BIN)/python bench/warm.py

bench-crosscheck: install
	$(BIN)/python bench/crosscheck.py

bench-prewarm: install
	$(BIN)/python bench/prewarm.py

bench-datapath: install
	$(BIN)/python bench/datapath.py

bench-cache: install
	$(BIN)/python bench/cache.py

bench-soak: install
	$(BIN)/python bench/soak.py

bench-chaos: install
	$(BIN)/python bench/chaos.py --target processes
	$(BIN)/python bench/chaos.py --target up --every 20

bench-async: install
	$(BIN)/python bench/async.py

bench-dashboard: install
	$(BIN)/python bench/dashboard_cost.py

.PHONY: bench-cluster
bench-cluster: install
	$(BIN)/python bench/cluster.py

clean:
	rm -rf $(VENV) build *.egg-info faasd_py/_native*.so .mypy_cache .pytest_cache .ruff_cache
