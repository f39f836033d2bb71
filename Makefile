# Two commands: `make run` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
JS_DIR := tests/js

.PHONY: run test lint format bench venv test-venv system-deps js-deps clean

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

# redis-server, memcached and node are real processes the tests start.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v memcached >/dev/null || missing="$$missing memcached"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
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

format: test-venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: test-venv system-deps js-deps lint
	$(BIN)/pytest -q

bench: test-venv system-deps
	$(BIN)/pip install -q -e '.[bench]'
	@test -d bench/node_modules/socket.io || \
		(cd bench && npm install --no-audit --no-fund --silent)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(JS_DIR)/node_modules bench/node_modules
