# microshop: one command to run the whole system, one to test it.
#   make run        set up .venv (first time) and start everything: microshop up
#   make test       set up .venv (first time) and run every test (unit, integration, end-to-end)
#   make test-fast  only the fast tests: domain rules and use cases against in-memory fakes
#   make lint       ruff, and the import boundaries between services
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# The services come from the one list of services (libs/chassis/.../services.py, plain Python).
SERVICE_LIST := libs/chassis/src/microshop_chassis/services.py
SERVICE_DIRS := $(shell $(PYTHON) $(SERVICE_LIST) folders)
# Every installable part of the repository, in dependency order.
PACKAGES := libs/chassis $(SERVICE_DIRS) monolith sims/card-processor sims/mail-catcher tools/chaos-proxy tools/telemetry cli

STAMP := $(VENV)/.installed
PYPROJECTS := $(foreach p,$(PACKAGES),$(p)/pyproject.toml)

.PHONY: run test test-fast install lint bench clean help

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

$(STAMP): $(PYPROJECTS) constraints.txt requirements-dev.txt $(SERVICE_LIST)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "microshop needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements-dev.txt $(addprefix -e ,$(PACKAGES))
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/microshop up

test: install
	$(BIN)/python -m pytest

# The tests/unit folders (pytest marks them `unit`): collecting only those keeps it to seconds.
test-fast: install
	$(BIN)/python -m pytest -q $(wildcard services/*/tests/unit)

# The import contracts are written from the list of services, so a new service is checked at once.
lint: install
	$(BIN)/ruff check .
	$(BIN)/python $(SERVICE_LIST) importlinter > $(VENV)/importlinter.ini
	$(BIN)/lint-imports $(VENV)/importlinter.ini

bench: install
	$(BIN)/microshop bench

clean:
	rm -rf $(VENV) .microshop
