# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv and installs the project (torch pinned to 2.13.0 via constraints.txt).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint deps install clean

# lint-imports (import-linter, contracts in .importlinter) enforces the layers of docs/architecture.md.
# deptry checks that every run-time import of rlops_plugin and components is declared (config in
# pyproject.toml). It cannot read setup.cfg, so hand it install_requires and the run-time extras
# (every extra but test and dev) as a requirements file.
DEPTRY_REQUIREMENTS := $(VENV)/deptry-requirements.txt
DEPTRY = $(BIN)/python -c 'import configparser; c = configparser.ConfigParser(interpolation=None); \
	c.read("setup.cfg"); x = c["options.extras_require"]; \
	print(c["options"]["install_requires"], *(x[k] for k in x if k not in ("test", "dev")), sep="\n")' \
	> $(DEPTRY_REQUIREMENTS) && $(BIN)/deptry rlops_plugin components --requirements-files $(DEPTRY_REQUIREMENTS)

$(STAMP): setup.cfg pyproject.toml constraints.txt requirements/openai-dataplane.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/openai-dataplane.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rlops demo

test: $(STAMP)
	bash scripts/system-deps.sh
	$(BIN)/ruff check .
	$(DEPTRY)
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(DEPTRY)
	$(BIN)/lint-imports

deps: $(STAMP)
	$(DEPTRY)

clean:
	rm -rf $(VENV) .pytest_cache
