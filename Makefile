# Entry points for a fresh machine: `make demo` (server + Envoy + backends), `make run`
# (the server alone) and `make test`. Each creates or updates .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint browser bench bench-registry bench-consul bench-kubernetes bench-kubernetes-routes bench-policy clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/xds-server --file examples/registry.yaml --policy examples/policy.yaml --xds-address 127.0.0.1:18000 --xds-insecure

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# tests/test_status_page drives Debian's Chromium through its chromedriver; installed with
# apt-get (as root, as CI runs) only when missing, so the test downloads nothing itself.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends chromium chromium-driver; }

test: lint browser
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run --proxies 1000 --clusters 1000 --endpoints 10 --mode both

bench-registry: $(STAMP)
	$(BIN)/python -m bench.registry --services 1000 --endpoints 10 --proxies 1000 --mode both --edits 5

bench-consul: $(STAMP)
	$(BIN)/python -m bench.consul --services 2000 --instances 5 --proxies 1000 --mode both --flips 5

bench-kubernetes: $(STAMP)
	$(BIN)/python -m bench.kubernetes --services 5000 --endpoints 5 --proxies 100 --mode both --edits 5

# Issue 11's figures: 5,000 Services, 5,000 HTTPRoutes, 50,000 Pods; route weight edits.
bench-kubernetes-routes: $(STAMP)
	$(BIN)/python -m bench.kubernetes --services 5000 --endpoints 10 --pods --routes --proxies 100 --mode both --edits 5

bench-policy: $(STAMP)
	$(BIN)/python -m bench.policy --services 1000 --endpoints 5 --proxies 1000 --mode both --edits 5

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Side by side with sovereign (PyPI), in its own virtualenv: its dependencies are not ours.
SOVEREIGN_VENV := .bench/sovereign-venv
.PHONY: bench-sovereign

$(SOVEREIGN_VENV)/bin/sovereign:
	$(PYTHON) -m venv $(SOVEREIGN_VENV)
	$(SOVEREIGN_VENV)/bin/pip install -q 'sovereign==0.32.*'

bench-sovereign: $(STAMP) $(SOVEREIGN_VENV)/bin/sovereign
	$(BIN)/python -m bench.side_by_side --services 1000 --sovereign-venv $(SOVEREIGN_VENV)
	$(BIN)/python -m bench.side_by_side --services 100 --sovereign-venv $(SOVEREIGN_VENV)
