# Two commands: `make run` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
JS_DIR := tests/js

.PHONY: run test test-latest lint typecheck docs format bench bench-deps soak venv test-venv system-deps js-deps clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python >= 3.11 is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	# [client]: the README's Python client snippet runs in this venv too.
	$(BIN)/pip install -q -e '.[client]'

test-venv: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	# The third-party plugin example the tests load through its entry point.
	$(BIN)/pip install -q --no-deps -e examples/polls

run: venv
	$(BIN)/sanic-rt serve

# redis-server, memcached, node and chromium (for /dashboard) are real processes the
# tests start; redis-cli (redis-tools) builds the Redis Cluster of tests/support/topologies.py.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	command -v memcached >/dev/null || missing="$$missing memcached"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else \
			echo "missing:$$missing -- run: sudo apt-get install -y$$missing"; exit 1; \
		fi; \
	fi

js-deps: system-deps
	@test -d $(JS_DIR)/node_modules/socket.io-client || \
		(cd $(JS_DIR) && npm install --no-audit --no-fund --silent)

lint: test-venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy, strict on the modules of the public plugin API (pyproject.toml [tool.mypy]);
# the first-party plugins and examples/polls are checked as plugin authors' code.
typecheck: test-venv
	$(BIN)/mypy sanic_rt plugins examples/polls/sanic_rt_polls

# The Plugin API reference, generated from the docstrings; a warning fails the build.
docs: test-venv
	$(BIN)/sphinx-build -q -W --keep-going -b html docs/reference build/docs
	@echo "reference: build/docs/index.html"

format: test-venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: test-venv system-deps js-deps lint typecheck docs
	$(BIN)/pytest -q

# Not in CI: the suite against the newest releases of the dependencies whose
# internals we override, past pyproject's upper bounds (pip warns about them).
LATEST := .venv-latest
test-latest: system-deps js-deps
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q -e '.[test]'
	$(LATEST)/bin/pip install -q --no-deps -e examples/polls
	$(LATEST)/bin/pip install -q --upgrade sanic python-socketio python-engineio uvicorn websockets redis pluggy
	$(LATEST)/bin/pip list 2>/dev/null | grep -i -E '^(sanic|python-socketio|python-engineio|uvicorn|websockets|redis|pluggy) '
	$(LATEST)/bin/pytest -q

bench-deps: test-venv system-deps
	$(BIN)/pip install -q -e '.[bench]'
	@test -d bench/node_modules/socket.io || \
		(cd bench && npm install --no-audit --no-fund --silent)

bench: bench-deps
	$(BIN)/python -m bench

# Not in CI: 10,000 clients on one worker with Redis for 10 minutes (about 13 minutes in
# all); SOAK_SCALE=0.2 for a 2-minute smoke run. See bench/README.md.
soak: bench-deps
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) $(LATEST) $(JS_DIR)/node_modules bench/node_modules
