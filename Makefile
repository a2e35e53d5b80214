# Two commands do all the set-up: `make run` starts the gateway, `make test` passes the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install install-test lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Dependencies are pinned by the lock files (regenerate: make lock); the package itself goes on top.
install: $(BIN)/python
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -r requirements-test.lock
	$(BIN)/pip install -q --no-deps -e .

lock: $(BIN)/python
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 -o requirements-test.lock

run: install
	$(BIN)/pixelgate serve $(ARGS)

# Four test processes: most tests wait on sockets and subprocesses, not on the two cores. Then,
# alone, the tests that time the event loop (beside other test processes they measure those).
test: install-test
	$(BIN)/python -m pytest -q -n 4 $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -p no:xdist tests/test_hardening.py -k off_the_event_loop

bench: install-test
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache
